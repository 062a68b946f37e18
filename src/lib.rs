//! onewindow: a data-sharing integration gateway for government services.
//!
//! The crate is organised by concern; docs/ARCHITECTURE.md describes the
//! planes, the request phases, the module map and the design rules.

pub mod adapter;
pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod case;
pub mod certs;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod demo;
pub mod error;
pub mod forward;
pub mod lang;
pub mod loader;
pub mod logging;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod pipeline;
pub mod protect;
pub mod routing;
pub mod scenario;
pub mod server;
pub mod sharing;
pub mod state;
pub mod trace;
pub mod transparency;
pub mod upstream;
