//! Wildfire step 1 (on a satellite): "capture" a synthetic thermal scene and
//! normalise it. The scene is generated from the seed (xorshift noise plus a
//! few hot fire fronts), then each tile is contrast-stretched (never amplifying plain noise into
//! false hotspots).

use databelt::{Context, Error};
use wildfire_types::{Frame, Scene, Tiles};

/// Largest scene: 64 MiB of pixels.
const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Smallest range a tile is stretched by (raw background noise spans 40).
const MIN_SPAN: u32 = 200;

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[databelt::function]
fn preprocess(_ctx: &Context, scene: Scene) -> Result<Frame, Error> {
    let per_tile = u64::from(scene.side) * u64::from(scene.side);
    let total = per_tile * u64::from(scene.tiles);
    if total == 0 || total > MAX_PIXELS {
        return Err(Error::Other(format!("scene of {total} pixels: must be 1..={MAX_PIXELS}")));
    }
    let mut rng = scene.seed | 1;
    let mut pixels = vec![0u8; total as usize];
    // Background: cool noise.
    for p in pixels.iter_mut() {
        *p = 20 + (xorshift(&mut rng) % 40) as u8;
    }
    // Fire fronts: a hot disc in every seventh tile.
    let side = scene.side as usize;
    for tile in (0..scene.tiles as usize).filter(|t| (t + (scene.seed as usize)).is_multiple_of(7)) {
        let base = tile * side * side;
        let (cx, cy) = ((xorshift(&mut rng) as usize) % side, (xorshift(&mut rng) as usize) % side);
        let r = (side / 8).max(1);
        for y in cy.saturating_sub(r)..(cy + r).min(side) {
            for x in cx.saturating_sub(r)..(cx + r).min(side) {
                let d2 = (x as i64 - cx as i64).pow(2) + (y as i64 - cy as i64).pow(2);
                if d2 <= (r * r) as i64 {
                    pixels[base + y * side + x] = 200 + (xorshift(&mut rng) % 56) as u8;
                }
            }
        }
    }
    // Normalise each tile: subtract its floor, stretch by its range but never
    // by less than MIN_SPAN, so a tile of pure background noise stays cool.
    for tile in pixels.chunks_mut(side * side) {
        let (lo, hi) = tile.iter().fold((255u8, 0u8), |(lo, hi), &p| (lo.min(p), hi.max(p)));
        let span = u32::from(hi - lo).max(MIN_SPAN);
        for p in tile.iter_mut() {
            *p = (u32::from(*p - lo) * 255 / span) as u8;
        }
    }
    Ok(Frame::Tiles(Tiles { seed: scene.seed, side: scene.side, pixels, hotspots: Vec::new(), passes: 0 }))
}
