//! Wildfire step 4 (in the cloud): raise the alarm, counting alarms per
//! scene in the cloud's state.

use databelt::{Context, Error};
use wildfire_types::{Alarm, Frame};

#[databelt::function]
fn alarm(ctx: &Context, input: Frame) -> Result<Alarm, Error> {
    let Frame::Report(report) = input else {
        return Err(Error::Other("alarm needs the confirming pass's report, got tiles".into()));
    };
    let fire = report.hotspots > 0;
    let raised_before =
        if fire { ctx.scope("wildfire")?.increment(&format!("alarms/{}", report.seed), 1)? - 1 } else { 0 };
    let message = if fire {
        format!(
            "FIRE: {} hotspots in {} tiles, max heat {}",
            report.hotspots,
            report.burning_tiles.len(),
            report.max_heat
        )
    } else {
        "no fire".to_string()
    };
    Ok(Alarm { fire, tiles: report.burning_tiles, message, raised_before })
}
