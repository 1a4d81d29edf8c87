//! Grids: how a block's output map is cut into R×C tiles, with row and column shares.

use super::region::{Region, Span};
use crate::error::{Error, Result};

/// An R×C arrangement of tiles. Row `i` gets `row_shares[i] / sum(row_shares)`
/// of the map's rows (likewise columns); empty share lists mean equal shares.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Grid {
    /// Number of tile rows.
    pub rows: usize,
    /// Number of tile columns.
    pub cols: usize,
    /// Relative heights of the tile rows (empty: uniform).
    pub row_shares: Vec<f64>,
    /// Relative widths of the tile columns (empty: uniform).
    pub col_shares: Vec<f64>,
}

impl Grid {
    /// An R×C grid with equal shares.
    pub fn uniform(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            row_shares: Vec::new(),
            col_shares: Vec::new(),
        }
    }

    /// An R×C grid with the given shares (one per row, one per column).
    pub fn with_shares(row_shares: Vec<f64>, col_shares: Vec<f64>) -> Self {
        Self {
            rows: row_shares.len(),
            cols: col_shares.len(),
            row_shares,
            col_shares,
        }
    }

    /// Parses `"RxC"` (also `"R×C"` or `"RXC"`) into a uniform grid.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidInput(format!(
                "grid '{s}' is not of the form RxC with R, C ≥ 1 (e.g. 3x3)"
            ))
        };
        let (r, c) = s.split_once(['x', 'X', '×']).ok_or_else(bad)?;
        let rows: usize = r.trim().parse().map_err(|_| bad())?;
        let cols: usize = c.trim().parse().map_err(|_| bad())?;
        if rows == 0 || cols == 0 {
            return Err(bad());
        }
        Ok(Self::uniform(rows, cols))
    }

    /// Number of tiles.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// True for a grid without tiles (never valid for splitting).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The grid clamped to an `h × w` map: at most `h` rows and `w` columns.
    /// A clamped axis falls back to equal shares, since the caller's shares
    /// were given per tile row/column and there are now fewer of them.
    pub fn clamped(&self, h: usize, w: usize) -> Grid {
        let mut g = self.clone();
        if g.rows > h {
            g.rows = h.max(1);
            g.row_shares.clear();
        }
        if g.cols > w {
            g.cols = w.max(1);
            g.col_shares.clear();
        }
        g
    }

    /// Cuts an `h × w` map into the grid's tiles, row-major (tile `r * cols + c`).
    /// Fails when the grid has more rows than `h` or more columns than `w`.
    pub fn regions(&self, h: usize, w: usize) -> Result<Vec<Region>> {
        let rows = split(h, self.rows, &self.row_shares, "rows")?;
        let cols = split(w, self.cols, &self.col_shares, "columns")?;
        Ok(rows
            .iter()
            .flat_map(|r| cols.iter().map(move |c| Region::new(*r, *c)))
            .collect())
    }
}

impl std::fmt::Display for Grid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.rows, self.cols)
    }
}

/// Splits `len` indices into `n` consecutive non-empty spans proportional to `shares`.
///
/// Rounding: boundary `k` is `round(len * (s_0 + … + s_{k-1}) / sum)` (half
/// away from zero), so each span's error is under one index and the spans
/// always add up to `len`. Then every span is forced to at least one index:
/// a forward pass moves boundaries right of their predecessor, a backward pass
/// moves them left of their successor. Fails when `n > len` (a tile would be
/// empty) or a share is not a positive finite number.
pub fn split(len: usize, n: usize, shares: &[f64], what: &str) -> Result<Vec<Span>> {
    if n == 0 {
        return Err(Error::InvalidInput(format!("grid has zero {what}")));
    }
    if n > len {
        return Err(Error::InvalidInput(format!(
            "grid has {n} {what} but the map has only {len}: every tile needs at least one pixel"
        )));
    }
    let uniform;
    let shares = if shares.is_empty() {
        uniform = vec![1.0; n];
        &uniform[..]
    } else {
        shares
    };
    if shares.len() != n {
        return Err(Error::InvalidInput(format!(
            "{} {what} shares for a grid of {n} {what}",
            shares.len()
        )));
    }
    if let Some(bad) = shares.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::InvalidInput(format!(
            "{what} share {bad} is not a positive number"
        )));
    }
    let total: f64 = shares.iter().sum();
    let mut bounds = Vec::with_capacity(n + 1);
    let mut acc = 0.0;
    bounds.push(0usize);
    for s in &shares[..n - 1] {
        acc += s;
        let b = (len as f64 * acc / total).round();
        bounds.push((b.max(0.0) as usize).min(len));
    }
    bounds.push(len);
    for k in 1..n {
        bounds[k] = bounds[k].max(bounds[k - 1] + 1);
    }
    for k in (1..n).rev() {
        bounds[k] = bounds[k].min(bounds[k + 1] - 1);
    }
    Ok(bounds.windows(2).map(|b| Span::new(b[0], b[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_split_proportionally_and_cover() {
        let s = split(100, 3, &[0.5, 0.3, 0.2], "rows").expect("split");
        assert_eq!(
            s,
            vec![Span::new(0, 50), Span::new(50, 80), Span::new(80, 100)]
        );
        let s = split(10, 3, &[], "rows").expect("split");
        assert_eq!(s, vec![Span::new(0, 3), Span::new(3, 7), Span::new(7, 10)]);
    }

    #[test]
    fn tiny_shares_still_get_one_pixel() {
        let s = split(4, 4, &[100.0, 0.001, 0.001, 0.001], "rows").expect("split");
        assert_eq!(
            s.iter().map(Span::len).collect::<Vec<_>>(),
            vec![1, 1, 1, 1]
        );
        let s = split(5, 3, &[0.001, 0.001, 100.0], "rows").expect("split");
        assert_eq!(s.iter().map(Span::len).collect::<Vec<_>>(), vec![1, 1, 3]);
    }

    #[test]
    fn grid_larger_than_map_is_an_error() {
        let e = Grid::uniform(9, 2).regions(8, 8).expect_err("9 rows of 8");
        assert!(e.to_string().contains("9 rows"), "{e}");
        assert_eq!(
            Grid::uniform(9, 2)
                .clamped(8, 8)
                .regions(8, 8)
                .expect("clamped")
                .len(),
            16
        );
    }

    #[test]
    fn parse_grid() {
        assert_eq!(Grid::parse("3x4").expect("parse"), Grid::uniform(3, 4));
        assert!(Grid::parse("3").is_err());
        assert!(Grid::parse("0x2").is_err());
    }
}
