//! onewindow: a data-sharing integration gateway for government services.
//!
//! The crate is organised by concern; see DESIGN.md for the request flow.

pub mod cache;
pub mod certs;
pub mod auth;
pub mod audit;
pub mod adapter;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod path;
pub mod routing;
pub mod scenario;
pub mod server;
pub mod upstream;
pub mod protect;
