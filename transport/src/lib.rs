//! Feature-map tiles between tiers: the wire format (rkyv headers + raw
//! payloads), a sans-IO framing core, quinn endpoints with mutual TLS, and a
//! user-space link emulator. Knows tensors only as shapes and bytes.
