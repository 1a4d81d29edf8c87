//! Half-open spatial ranges and rectangles in a feature map's own coordinates.

/// A half-open range `[start, end)` of rows or columns.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Span {
    /// First index inside the range.
    pub start: usize,
    /// One past the last index.
    pub end: usize,
}

impl Span {
    /// The range `[start, end)`.
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// Number of indices in the range.
    pub fn len(&self) -> usize {
        self.end.saturating_sub(self.start)
    }

    /// True when the range holds no index.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The smallest range holding both (an empty range is the identity).
    pub fn union(&self, other: &Span) -> Span {
        if self.is_empty() {
            *other
        } else if other.is_empty() {
            *self
        } else {
            Span::new(self.start.min(other.start), self.end.max(other.end))
        }
    }

    /// True when `other` lies inside `self`.
    pub fn contains(&self, other: &Span) -> bool {
        other.start >= self.start && other.end <= self.end
    }
}

/// A rectangle of a feature map: rows × columns.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Region {
    /// Rows (the H axis).
    pub rows: Span,
    /// Columns (the W axis).
    pub cols: Span,
}

impl Region {
    /// The rectangle `rows × cols`.
    pub fn new(rows: Span, cols: Span) -> Self {
        Self { rows, cols }
    }

    /// The whole of an `h × w` map.
    pub fn full(h: usize, w: usize) -> Self {
        Self::new(Span::new(0, h), Span::new(0, w))
    }

    /// Number of pixels.
    pub fn area(&self) -> usize {
        self.rows.len() * self.cols.len()
    }

    /// The smallest rectangle holding both.
    pub fn union(&self, other: &Region) -> Region {
        Region::new(self.rows.union(&other.rows), self.cols.union(&other.cols))
    }

    /// True when `other` lies inside `self`.
    pub fn contains(&self, other: &Region) -> bool {
        self.rows.contains(&other.rows) && self.cols.contains(&other.cols)
    }

    /// The span along axis 0 (rows) or 1 (columns).
    pub fn axis(&self, a: usize) -> Span {
        if a == 0 { self.rows } else { self.cols }
    }

    /// Builds a region from its two axes.
    pub fn from_axes(axes: [Span; 2]) -> Self {
        Self::new(axes[0], axes[1])
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rows {}..{} cols {}..{}",
            self.rows.start, self.rows.end, self.cols.start, self.cols.end
        )
    }
}
