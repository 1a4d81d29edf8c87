//! Mutual TLS: only peers with a certificate from the cluster CA that names
//! an allow-listed node get a connection; wrong ALPN is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use transport::{Endpoint, Identity, TileKind};

const SERVER: &str = "edge-1";
const CLIENT: &str = "coord";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A bare quinn client endpoint with the given rustls config.
fn raw_client(
    tls: rustls::ClientConfig,
) -> Result<quinn::Endpoint, Box<dyn std::error::Error + Send + Sync>> {
    let mut ep = quinn::Endpoint::client(localhost())?;
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls)?,
    )));
    Ok(ep)
}

/// The server must refuse: its accept yields an error (returned: the one
/// place a daemon logs why), and the client's connection fails or is
/// closed at once.
async fn assert_refused(
    server: &Endpoint,
    client: &quinn::Endpoint,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let addr = server.local_addr()?;
    let connecting = client.connect(addr, SERVER)?;
    let (accepted, connected) = tokio::join!(server.accept(), connecting);
    let why = match accepted {
        Some(Err(e)) => e.to_string(),
        other => panic!("server accepted: {other:?}"),
    };
    if let Ok(c) = connected {
        // TLS 1.3 clients may finish before the server has judged their certificate.
        let closed = tokio::time::timeout(Duration::from_secs(3), c.closed()).await?;
        assert!(!closed.to_string().is_empty());
        assert!(c.open_uni().await.is_err());
    }
    Ok(why)
}

fn roots(id: &Identity) -> Result<Arc<RootCertStore>, rustls::Error> {
    let mut r = RootCertStore::empty();
    r.add(id.ca.clone())?;
    Ok(Arc::new(r))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() -> TestResult {
    let dir = certs(&[SERVER, CLIENT])?;
    let server = Endpoint::bind(localhost(), config(dir.path(), SERVER, &[CLIENT])?)?;
    let id = Identity::load(dir.path(), CLIENT)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&id)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![transport::ALPN.to_vec()];
    assert_refused(&server, &raw_client(tls)?).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() -> TestResult {
    let dir = certs(&[SERVER, CLIENT])?;
    let other = certs(&[SERVER, CLIENT])?;
    let server = Endpoint::bind(localhost(), config(dir.path(), SERVER, &[CLIENT])?)?;
    // Same node name, other CA; the client even trusts the real CA so that
    // only the server's check of the client certificate can refuse it.
    let real = Identity::load(dir.path(), CLIENT)?;
    let fake = Identity::load(other.path(), CLIENT)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&real)?)
        .with_client_auth_cert(fake.chain.clone(), fake.key.clone_key())?;
    tls.alpn_protocols = vec![transport::ALPN.to_vec()];
    assert_refused(&server, &raw_client(tls)?).await?;
    // And our own endpoint with the other CA's identity cannot connect either.
    let client = Endpoint::bind(localhost(), config(other.path(), CLIENT, &[SERVER])?)?;
    let (acc, con) = tokio::join!(
        server.accept(),
        client.connect(server.local_addr()?, SERVER)
    );
    assert!(matches!(acc, Some(Err(_))));
    let Err(e) = con else {
        panic!("the client must not trust a server from another CA");
    };
    assert!(e.to_string().contains("same `tessera certs` folder"), "{e}");
    Ok(())
}

/// A cluster file that gives one node's name with another's address: the
/// message says so, not that the CAs differ (they do not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_at_another_nodes_address_is_refused_and_said_so() -> TestResult {
    let dir = certs(&[SERVER, "edge-2", CLIENT])?;
    let server = Endpoint::bind(localhost(), config(dir.path(), SERVER, &[CLIENT])?)?;
    let client = Endpoint::bind(
        localhost(),
        config(dir.path(), CLIENT, &[SERVER, "edge-2"])?,
    )?;
    let (_, con) = tokio::join!(
        server.accept(),
        client.connect(server.local_addr()?, "edge-2")
    );
    let Err(e) = con else {
        panic!("edge-1's certificate must not pass for edge-2");
    };
    let e = e.to_string();
    assert!(e.contains("another node's certificate"), "{e}");
    assert!(!e.contains("CA"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_outside_the_allow_list_is_refused() -> TestResult {
    let dir = certs(&[SERVER, CLIENT, "rogue"])?;
    let server = Endpoint::bind(localhost(), config(dir.path(), SERVER, &[CLIENT])?)?;
    let rogue = Identity::load(dir.path(), "rogue")?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&rogue)?)
        .with_client_auth_cert(rogue.chain.clone(), rogue.key.clone_key())?;
    tls.alpn_protocols = vec![transport::ALPN.to_vec()];
    let why = assert_refused(&server, &raw_client(tls)?).await?;
    assert!(
        why.contains("certificate [\"rogue\"] not in peers"),
        "{why}"
    );
    // The allowed client still gets in.
    let client = Endpoint::bind(localhost(), config(dir.path(), CLIENT, &[SERVER])?)?;
    let (acc, con) = tokio::join!(
        server.accept(),
        client.connect(server.local_addr()?, SERVER)
    );
    let sc = acc.ok_or("closed")??;
    let cc = con?;
    cc.send_tile_acked(TileKind::Tile, &header(1, 1, 2, 2), &[1.0, 2.0, 3.0, 4.0])
        .await?;
    assert_eq!(
        &sc.recv_tile().await.ok_or("no tile")?.payload[..],
        &[1.0, 2.0, 3.0, 4.0]
    );
    // Our endpoint will not even dial a name outside its allow-list.
    assert!(client.connect(server.local_addr()?, "rogue").await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_alpn_is_refused() -> TestResult {
    let dir = certs(&[SERVER, CLIENT])?;
    let server = Endpoint::bind(localhost(), config(dir.path(), SERVER, &[CLIENT])?)?;
    let id = Identity::load(dir.path(), CLIENT)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(&id)?)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())?;
    tls.alpn_protocols = vec![b"tessera/2".to_vec()];
    let client = raw_client(tls)?;
    let (acc, con) = tokio::join!(
        server.accept(),
        client.connect(server.local_addr()?, SERVER)?
    );
    assert!(matches!(acc, Some(Err(_))));
    assert!(con.is_err());
    Ok(())
}

/// `tessera certs` run twice on one folder: the node added by the second
/// run talks to the nodes of the first (before, the second run made a new
/// CA and the handshake failed with `BadSignature`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certified_by_a_second_run_joins_the_first_runs_nodes() -> TestResult {
    let dir = certs(&[SERVER])?;
    transport::certs::generate(dir.path(), &[CLIENT.to_string()])?;
    let (_se, _ce, sc, cc) = pair(
        config(dir.path(), SERVER, &[CLIENT])?,
        config(dir.path(), CLIENT, &[SERVER])?,
        SERVER,
    )
    .await?;
    cc.send_tile_acked(TileKind::Tile, &header(1, 1, 1, 2), &[5.0, 6.0])
        .await?;
    assert_eq!(
        &sc.recv_tile().await.ok_or("no tile")?.payload[..],
        &[5.0, 6.0]
    );
    Ok(())
}
