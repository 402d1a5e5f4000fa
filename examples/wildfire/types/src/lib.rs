//! The states the wildfire workflow hands from step to step:
//! `Scene` → preprocess → `Frame::Tiles` → detect → `Frame::Tiles` (with
//! hotspots marked) → detect → `Frame::Report` → alarm → `Alarm`.
//!
//! Every hand-off between steps is a [`Frame`], so the same detect
//! component serves both passes and each step decodes exactly what its
//! predecessor encoded (postcard, via `#[databelt::data]`).

/// What to observe: a synthetic thermal scene (deterministic from `seed`).
#[databelt::data]
pub struct Scene {
    /// Seed of the generator: the same seed gives the same pixels.
    pub seed: u64,
    /// Tiles in the scene.
    pub tiles: u32,
    /// Side of a square tile, pixels (one byte per pixel: temperature).
    pub side: u32,
}

/// A hotspot: a pixel hotter than the detection threshold.
#[databelt::data]
pub struct Hotspot {
    /// Tile index.
    pub tile: u32,
    /// Pixel index inside the tile.
    pub pixel: u32,
    /// Its value (0-255).
    pub heat: u8,
}

/// Preprocessed tiles and what detection found so far.
#[databelt::data]
pub struct Tiles {
    /// The scene's seed.
    pub seed: u64,
    /// Side of a tile.
    pub side: u32,
    /// All tiles, row-major, one byte per pixel, tile after tile (encoded
    /// as one byte string, not byte by byte).
    #[serde(with = "databelt::serde_bytes")]
    pub pixels: Vec<u8>,
    /// Hotspots found by detection passes so far.
    pub hotspots: Vec<Hotspot>,
    /// Detection passes done.
    pub passes: u32,
}

/// What the last detection pass hands to the alarm (no pixels).
#[databelt::data]
pub struct Report {
    /// The scene's seed.
    pub seed: u64,
    /// Tiles with at least one confirmed hotspot.
    pub burning_tiles: Vec<u32>,
    /// Confirmed hotspots.
    pub hotspots: u32,
    /// Hottest pixel seen.
    pub max_heat: u8,
}

/// The state handed from one step to the next.
#[databelt::data]
pub enum Frame {
    /// Tiles (from preprocess, or from the marking pass of detection).
    Tiles(Tiles),
    /// The confirming pass's report: no pixels, small enough for the downlink.
    Report(Report),
}

/// The alarm raised in the cloud.
#[databelt::data]
pub struct Alarm {
    /// Whether there is a fire.
    pub fire: bool,
    /// Tiles to send crews to.
    pub tiles: Vec<u32>,
    /// A line for the operator.
    pub message: String,
    /// Alarms raised so far for this scene seed (state kept in the cloud).
    pub raised_before: i64,
}
