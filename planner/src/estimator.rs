//! A one-dimensional estimator with uncertainty, for throughputs, bandwidths
//! and delays.
//!
//! Why this filter: a plain EWMA has one gain, so it is either smooth under
//! noise or quick after a step, never both. This is a scalar Kalman filter
//! (random-walk state, noisy observations) whose measurement noise `r` is
//! itself learnt as an EWMA of squared innovations (as TCP learns RTTVAR),
//! plus an innovation gate: an observation further than 4σ from the estimate
//! (or off by more than a factor of 1.75, however noisy the past was) is
//! treated as a change of regime and raises the state variance to the
//! squared innovation, so that observation is taken almost whole. With the
//! default tuning the steady gain is about 0.1, so under ±10% uniform noise
//! the estimate stays within a few percent (the gate never fires: 4σ of that
//! noise is 23%); after a 2× slowdown the gate fires on the first slow span
//! and the estimate is within a few percent of the new level. Changes
//! smaller than 4σ of the noise are followed at the Kalman gain, over ~10
//! observations.

/// Samples before the ratio gate applies.
const SETTLE_SAMPLES: u64 = 2;

/// Tuning of [`Estimator`], relative to the estimated value so one set fits
/// GFLOP/s and milliseconds alike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EstimatorConfig {
    /// Relative process noise per observation (how fast the truth may drift).
    pub drift: f64,
    /// Smoothing of the learnt measurement variance (EWMA weight of a new squared innovation).
    pub noise_weight: f64,
    /// Floor of the relative measurement noise, so a run of identical samples cannot make the filter deaf.
    pub min_noise: f64,
    /// Innovations beyond this many standard deviations count as a change of regime.
    pub gate_sigmas: f64,
    /// An observation more than this factor above or below the estimate is a
    /// change of regime too, whatever noise was learnt: tiles of one node
    /// vary by ±30 % on a shared machine, which puts 4σ beyond a 3× slowdown
    /// in rate terms, and such a node must still be seen at once.
    pub gate_ratio: f64,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            drift: 0.005,
            noise_weight: 0.1,
            min_noise: 0.02,
            gate_sigmas: 4.0,
            gate_ratio: 1.75,
        }
    }
}

/// An estimate and its uncertainty.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Best estimate of the value.
    pub mean: f64,
    /// Standard deviation of the estimate of the mean (not of single samples).
    pub std: f64,
}

/// Scalar adaptive Kalman filter; see the module doc for the reasoning.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimator {
    mean: f64,
    /// Variance of the estimate.
    p: f64,
    /// Learnt variance of one observation.
    r: f64,
    samples: u64,
}

impl Estimator {
    /// Starts from a prior `mean` with relative uncertainty `rel_std` (0.5 = ±50%).
    pub fn with_prior(mean: f64, rel_std: f64) -> Self {
        let p = (mean * rel_std).powi(2);
        Estimator {
            mean,
            p,
            r: (mean * 0.1).powi(2),
            samples: 0,
        }
    }

    /// Folds in one observation. Non-finite or non-positive samples are ignored
    /// (the caller validates them and reports an error).
    pub fn observe(&mut self, x: f64, cfg: &EstimatorConfig) {
        if !(x.is_finite() && x > 0.0) {
            return;
        }
        let e = x - self.mean;
        let r = self.r.max((cfg.min_noise * self.mean).powi(2));
        let ratio = x / self.mean;
        // The ratio gate waits until the first samples have pulled the
        // estimate off its prior and taught it the noise; before that, a
        // noisy node would have every sample taken whole.
        let step = self.samples >= SETTLE_SAMPLES
            && (ratio > cfg.gate_ratio || ratio * cfg.gate_ratio < 1.0);
        let band = cfg.gate_sigmas.powi(2) * (self.p + r);
        let gated = step || (self.samples > 0 && e * e > band);
        if self.samples > 0 && !step {
            // Noise is learnt from every innovation short of a step, clipped
            // at the gate: a node noisier than the prior learns its noise in
            // a few samples instead of having every sample taken whole.
            self.r = (1.0 - cfg.noise_weight) * self.r + cfg.noise_weight * (e * e).min(band);
        }
        if gated {
            self.p = self.p.max(e * e);
        }
        let k = self.p / (self.p + r);
        self.mean += k * e;
        self.p = (1.0 - k) * self.p + (cfg.drift * self.mean).powi(2);
        self.samples += 1;
    }

    /// The current estimate with its standard deviation.
    pub fn estimate(&self) -> Estimate {
        Estimate {
            mean: self.mean,
            std: self.p.sqrt(),
        }
    }

    /// Number of observations folded in so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_change_is_tracked_within_two_samples() {
        let cfg = EstimatorConfig::default();
        let mut e = Estimator::with_prior(100.0, 0.5);
        for i in 0..30 {
            e.observe(if i % 2 == 0 { 105.0 } else { 95.0 }, &cfg);
        }
        assert!((e.estimate().mean - 100.0).abs() < 5.0);
        e.observe(50.0, &cfg);
        e.observe(50.0, &cfg);
        let m = e.estimate().mean;
        assert!((m - 50.0).abs() < 5.0, "after a 2× step: {m}");
    }

    #[test]
    fn a_threefold_slowdown_is_seen_at_once_under_heavy_noise() {
        let cfg = EstimatorConfig::default();
        let mut e = Estimator::with_prior(100.0, 0.5);
        // ±30 % noise: the learnt 4σ band is wider than the step below.
        for i in 0..40 {
            e.observe(if i % 2 == 0 { 130.0 } else { 70.0 }, &cfg);
        }
        assert!((e.estimate().mean - 100.0).abs() < 15.0, "{e:?}");
        e.observe(100.0 / 3.0, &cfg);
        let m = e.estimate().mean;
        assert!(m < 50.0, "after one 3× slower sample: {m}");
        e.observe(100.0 / 3.0, &cfg);
        let m = e.estimate().mean;
        assert!(m < 42.0, "after two: {m}");
    }

    #[test]
    fn noise_is_smoothed() {
        let cfg = EstimatorConfig::default();
        let mut e = Estimator::with_prior(100.0, 0.1);
        let mut worst: f64 = 0.0;
        // Deterministic ±10% pseudo-noise.
        let mut s: u64 = 12345;
        for i in 0..500 {
            let u = crate::testutil::uniform(&mut s);
            e.observe(100.0 * (0.9 + 0.2 * u), &cfg);
            if i > 20 {
                worst = worst.max((e.estimate().mean - 100.0).abs());
            }
        }
        assert!(worst < 6.0, "estimate wandered by {worst}%");
        assert!(e.estimate().std < 5.0);
    }

    #[test]
    fn bad_samples_are_ignored() {
        let cfg = EstimatorConfig::default();
        let mut e = Estimator::with_prior(10.0, 0.5);
        e.observe(f64::NAN, &cfg);
        e.observe(-1.0, &cfg);
        assert_eq!(e.samples(), 0);
        assert_eq!(e.estimate().mean, 10.0);
    }
}
