//! The operator's API server client: kube's request stack over HTTP/2.
//!
//! kube's own client speaks HTTP/1.1 only, so every watch and every request in flight holds a TLS
//! connection of its own: 20-30 for the leader with 1,000 bindings, each with its buffers. The
//! API server speaks HTTP/2, and client-go uses it so: one connection carries every watch and
//! request as streams, checked by pings. Only the transport differs from kube's stack: the same
//! base URI, auth, extra headers and retry layers from the same config.

use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// How often the connection is pinged while it carries streams, and how long a ping may go
/// unanswered (client-go's `ReadIdleTimeout` and `PingTimeout`): a dead peer is noticed without a
/// read timeout, which would also cut the watches that are only quiet.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A client that offers HTTP/2 (and HTTP/1.1, for a server or proxy without it). A config with a
/// proxy gets kube's own client, which knows how to tunnel.
pub fn multiplexed(config: Config) -> anyhow::Result<Client> {
    if config.proxy_url.is_some() {
        return Ok(Client::try_from(config)?);
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(config.connect_timeout);
    let tls = HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => tls.with_server_name_resolver(FixedServerNameResolver::new(
            name.clone()
                .try_into()
                .map_err(|e| anyhow::anyhow!("tls-server-name {name:?}: {e}"))?,
        )),
        None => tls,
    };
    let connector = tls.enable_all_versions().wrap_connector(tcp);
    let transport = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_EVERY)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(transport);
    Ok(Client::new(service, config.default_namespace))
}
