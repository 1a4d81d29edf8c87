//! Tile geometry: receptive fields, halos, grids with shares, fused-block choice, tiled execution.
