//! quinn transport settings derived from a link's bandwidth and round-trip time.

use std::sync::Arc;
use std::time::Duration;

use quinn::{TransportConfig, VarInt};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Datagrams quinn 0.11 puts in one GSO send (`MAX_TRANSMIT_SEGMENTS`).
const QUINN_GSO_SEGMENTS: usize = 10;

/// Longest gap between keep-alive packets on an idle connection.
const KEEP_ALIVE_MAX: Duration = Duration::from_secs(1);

/// Largest UDP payload one send may carry (IPv4: 65535 - 20 - 8).
const MAX_UDP_SEND: usize = 65_507;

/// What the transport should assume about a link, and the stream limits to enforce.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkTuning {
    /// Expected bandwidth, bytes per second.
    pub bandwidth_bytes_per_s: u64,
    /// Expected round-trip time.
    #[serde(with = "millis")]
    pub rtt: Duration,
    /// Tile streams the peer may have open at once.
    pub max_concurrent_streams: u32,
    /// Connection closes after this long without any packet.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// First UDP payload size; loopback and jumbo-frame links can start far above 1200.
    pub initial_mtu: u16,
    /// Largest UDP payload MTU discovery may try.
    pub max_mtu: u16,
    /// Ask the peer (QUIC ACK-frequency extension) to acknowledge only every
    /// this many ack-eliciting packets; 0 keeps quinn's default (every second one).
    pub ack_every: u32,
}

impl Default for LinkTuning {
    fn default() -> Self {
        Self {
            bandwidth_bytes_per_s: 125_000_000, // 1 Gbit/s
            rtt: Duration::from_millis(10),
            max_concurrent_streams: 64,
            idle_timeout: Duration::from_secs(30),
            initial_mtu: 1200,
            max_mtu: 1452,
            ack_every: 0,
        }
    }
}

impl LinkTuning {
    /// Settings for a loopback link: datagrams up to 65000 bytes (the
    /// loopback MTU is 64 KiB) and a short RTT.
    pub fn loopback() -> Self {
        Self {
            bandwidth_bytes_per_s: 4_000_000_000,
            rtt: Duration::from_micros(200),
            // Start at a size that still fits a GSO batch; MTU discovery then
            // climbs to the ceiling within a few round trips. One 65000-byte
            // QUIC packet costs quinn the per-packet work (header protection,
            // ACK tracking, frame parsing) of one 6400-byte packet: 25-35 %
            // less CPU per GiB than the 6000-6400 range (measured in the benchmark).
            initial_mtu: 6000,
            max_mtu: 65_000,
            // Each ACK is a datagram through both kernels and both quinn
            // drivers; every 8th 65000-byte packet is plenty on a lossless
            // path. A small gain at best: 15-30 % less CPU per GiB in one
            // alternating comparison, none in the benchmark's same-run variant.
            ack_every: 8,
            ..Self::default()
        }
    }

    /// Whether quinn may batch datagrams with GSO: it puts up to 10
    /// datagrams in one send, and Linux refuses a send over 64 KiB
    /// (EMSGSIZE, the whole batch is lost and MTU discovery backs off to
    /// 1200). Above that one datagram per send is the cheaper path anyway.
    pub fn segmentation_offload(&self) -> bool {
        QUINN_GSO_SEGMENTS * usize::from(self.max_mtu) <= MAX_UDP_SEND
    }

    /// The bandwidth-delay product in bytes.
    pub fn bdp_bytes(&self) -> u64 {
        let bdp = u128::from(self.bandwidth_bytes_per_s) * self.rtt.as_micros() / 1_000_000;
        u64::try_from(bdp).unwrap_or(u64::MAX)
    }

    /// Per-stream receive window: two BDPs, at least 2 MiB so a 1 MiB tile
    /// and its header never wait for a window update on short links (at a
    /// 1 MiB floor loopback moved 1 MiB tiles at 1.0-1.1 GB/s, at 2 MiB
    /// 1.2-1.6), at most 64 MiB. Not larger: the connection window is four
    /// of these, and more in flight than the 8 MiB socket buffer holds is
    /// dropped by the kernel (a 4 MiB floor lost 2-14 % of the datagrams).
    pub fn stream_window(&self) -> u64 {
        (2 * self.bdp_bytes()).clamp(2 << 20, 64 << 20)
    }

    /// Connection receive window: enough for a few streams at full speed,
    /// but bounded so a slow receiver pushes back instead of buffering.
    pub fn connection_window(&self) -> u64 {
        (self.stream_window() * 4)
            .max(4 * self.bdp_bytes())
            .min(256 << 20)
    }

    /// Builds the quinn transport configuration.
    pub fn transport_config(&self) -> Result<Arc<TransportConfig>> {
        if self.bandwidth_bytes_per_s == 0 {
            return Err(Error::Config("bandwidth must be positive".into()));
        }
        if self.initial_mtu < 1200 || self.max_mtu < self.initial_mtu {
            return Err(Error::Config(format!(
                "mtu: need 1200 <= initial_mtu ({}) <= max_mtu ({})",
                self.initial_mtu, self.max_mtu
            )));
        }
        let var = |v: u64| VarInt::from_u64(v).map_err(|e| Error::Config(e.to_string()));
        let mut t = TransportConfig::default();
        t.stream_receive_window(var(self.stream_window())?);
        t.receive_window(var(self.connection_window())?);
        t.send_window(self.connection_window());
        t.max_concurrent_uni_streams(VarInt::from_u32(self.max_concurrent_streams));
        // Tiles use uni streams only; nobody needs a bi stream.
        t.max_concurrent_bidi_streams(VarInt::from_u32(0));
        t.initial_rtt(self.rtt.max(Duration::from_micros(100)));
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| Error::Config(e.to_string()))?;
        t.max_idle_timeout(Some(idle));
        // At most 1 s apart: a coordinator probes a node that has sent
        // nothing for 3 s while it runs a job (and calls one that is silent
        // for 10 s while loading a model stalled), so a live peer must be
        // heard from well within that.
        t.keep_alive_interval(Some((self.idle_timeout / 3).min(KEEP_ALIVE_MAX)));
        t.initial_mtu(self.initial_mtu);
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_mtu);
        t.mtu_discovery_config(Some(mtu));
        t.enable_segmentation_offload(self.segmentation_offload());
        if self.ack_every > 0 {
            let mut ack = quinn::AckFrequencyConfig::default();
            // The threshold counts packets beyond the first before an ACK is due.
            ack.ack_eliciting_threshold(VarInt::from_u32(self.ack_every - 1));
            // Still acknowledge within about a round trip, so the sender's window never waits long.
            let delay = self
                .rtt
                .clamp(Duration::from_millis(1), Duration::from_millis(25));
            ack.max_ack_delay(Some(delay));
            t.ack_frequency_config(Some(ack));
        }
        Ok(Arc::new(t))
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms = f64::deserialize(d)?;
        if !(0.0..=1e9).contains(&ms) {
            return Err(serde::de::Error::custom(format!("{ms} ms out of range")));
        }
        Ok(Duration::from_secs_f64(ms / 1000.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_the_bandwidth_delay_product() {
        let wan = LinkTuning {
            bandwidth_bytes_per_s: 12_500_000, // 100 Mbit/s
            rtt: Duration::from_millis(100),
            ..LinkTuning::default()
        };
        assert_eq!(wan.bdp_bytes(), 1_250_000);
        assert_eq!(wan.stream_window(), 2_500_000);
        assert_eq!(wan.connection_window(), 10_000_000);
        let lan = LinkTuning {
            rtt: Duration::from_micros(100),
            ..LinkTuning::default()
        };
        assert_eq!(
            lan.stream_window(),
            2 << 20,
            "short links get the 2 MiB floor"
        );
        assert!(wan.transport_config().is_ok());
        assert!(
            wan.segmentation_offload(),
            "1452-byte datagrams batch 10 per send"
        );
        let lo = LinkTuning::loopback();
        assert!(
            !lo.segmentation_offload(),
            "10 x 65000 bytes is no valid send"
        );
        assert!(lo.transport_config().is_ok());
        let jumbo = LinkTuning {
            max_mtu: 6550,
            ..LinkTuning::default()
        };
        assert!(jumbo.segmentation_offload());
        let every_4th = LinkTuning {
            ack_every: 4,
            ..LinkTuning::default()
        };
        assert!(every_4th.transport_config().is_ok());
        let bad = LinkTuning {
            initial_mtu: 100,
            ..LinkTuning::default()
        };
        assert!(bad.transport_config().is_err());
    }
}
