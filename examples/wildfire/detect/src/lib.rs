//! Wildfire steps 2 and 3 (on satellites): detection passes. The first pass
//! marks pixels above a threshold as hotspots and hands the tiles on; the
//! second confirms hotspots that have enough hot neighbours and hands only a
//! small report to the cloud (the same component, deployed twice: it knows
//! which pass it is from `Tiles::passes`).

use databelt::{Context, Error};
use wildfire_types::{Frame, Hotspot, Report, Tiles};

const THRESHOLD: u8 = 230;

fn mark(mut t: Tiles) -> Tiles {
    let per_tile = (t.side * t.side) as usize;
    t.hotspots = t
        .pixels
        .iter()
        .enumerate()
        .filter(|&(_, &p)| p >= THRESHOLD)
        .map(|(i, &p)| Hotspot { tile: (i / per_tile) as u32, pixel: (i % per_tile) as u32, heat: p })
        .collect();
    t.passes += 1;
    t
}

fn confirm(t: Tiles) -> Report {
    let side = t.side as usize;
    let per_tile = side * side;
    let hot = |tile: usize, x: usize, y: usize| t.pixels[tile * per_tile + y * side + x] >= THRESHOLD;
    let mut burning: Vec<u32> = Vec::new();
    let (mut confirmed, mut max_heat) = (0u32, 0u8);
    for h in &t.hotspots {
        let (tile, x, y) = (h.tile as usize, h.pixel as usize % side, h.pixel as usize / side);
        let mut neighbours = 0;
        for (dx, dy) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
            let (nx, ny) = (x as i64 + dx, y as i64 + dy);
            if nx >= 0 && ny >= 0 && (nx as usize) < side && (ny as usize) < side && hot(tile, nx as usize, ny as usize)
            {
                neighbours += 1;
            }
        }
        if neighbours >= 2 {
            confirmed += 1;
            max_heat = max_heat.max(h.heat);
            if burning.last() != Some(&h.tile) {
                burning.push(h.tile);
            }
        }
    }
    Report { seed: t.seed, burning_tiles: burning, hotspots: confirmed, max_heat }
}

#[databelt::function]
fn detect(_ctx: &Context, input: Frame) -> Result<Frame, Error> {
    match input {
        Frame::Tiles(t) if t.passes == 0 => Ok(Frame::Tiles(mark(t))),
        Frame::Tiles(t) => Ok(Frame::Report(confirm(t))),
        Frame::Report(_) => Err(Error::Other("a report cannot be detected again".into())),
    }
}
