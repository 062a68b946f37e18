//! onewindow: a data-sharing integration gateway for government services.
//!
//! The crate is organised by concern; see DESIGN.md for the request flow.

pub mod adapter;
pub mod config;
