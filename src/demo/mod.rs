//! The simulated departments of the demo world, each speaking its own
//! dialect, started in-process on loopback when `[demo] enabled = true`.
//!
//! They are real HTTP servers: the gateway reaches them through the same
//! adapters, address policy and pooled client as a real department.

mod data;
pub mod exchange;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::server::{ConnInfo, Handler, serve};

/// Which simulated department.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sim {
    /// Market supervision: REST JSON with pinyin-initial field names.
    MarketSupervision,
    /// Health commission: REST JSON, camelCase inside `{"code", "message", "result"}`.
    HealthCommission,
    /// Fire and rescue: SOAP 1.1.
    FireRescue,
    /// Public security: REST JSON.
    PublicSecurity,
    /// Ecology and environment: REST JSON, `{"success", "errorCode", "payload"}`.
    EcologyEnvironment,
}

impl Sim {
    /// The simulator for a department name of the demo world.
    pub fn for_department(name: &str) -> Option<Self> {
        match name {
            "market-supervision" => Some(Sim::MarketSupervision),
            "health-commission" => Some(Sim::HealthCommission),
            "fire-rescue" => Some(Sim::FireRescue),
            "public-security" => Some(Sim::PublicSecurity),
            "ecology-environment" => Some(Sim::EcologyEnvironment),
            _ => None,
        }
    }

    /// Answers one request: (status, content type, body).
    pub fn answer(
        self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> (StatusCode, &'static str, String) {
        match self {
            Sim::MarketSupervision => data::market_supervision(method, path, query),
            Sim::HealthCommission => data::health_commission(method, path, body),
            Sim::FireRescue => data::fire_rescue(method, path, body),
            Sim::PublicSecurity => data::public_security(method, path, query),
            Sim::EcologyEnvironment => data::ecology_environment(method, path, query),
        }
    }
}

struct SimHandler(Sim);

impl Handler for SimHandler {
    async fn handle<B: crate::server::RequestBody>(
        self: Arc<Self>,
        req: http::Request<B>,
        _conn: Arc<ConnInfo>,
    ) -> http::Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let (status, ctype, text) =
            self.0
                .answer(&parts.method, parts.uri.path(), parts.uri.query(), &body);
        let mut resp = http::Response::new(Full::new(Bytes::from(text)));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(ctype),
        );
        if let Some(id) = parts.headers.get("x-request-id") {
            resp.headers_mut().insert("x-request-id", id.clone());
        }
        resp
    }
}

/// Binds the simulated department `sim` on `addr` and serves it until
/// `shutdown`. Returns the bound address (useful with port 0).
pub async fn start(
    sim: Sim,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(
        listener,
        None,
        Arc::new(SimHandler(sim)),
        Limits::default(),
        shutdown,
        std::time::Duration::from_secs(1),
        Arc::default(),
    ));
    Ok(local)
}
