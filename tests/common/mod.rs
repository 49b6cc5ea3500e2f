//! What the integration tests share, one copy of each: a trusted test issuer
//! ([`jwt`]), requests with a bearer token and what their responses say ([`calls`]), a
//! `tracing` capture ([`events`]), a gRPC health server on loopback ([`grpc`]), scratch
//! directories ([`files`]), Redis servers ([`redis`]) and a `metrics` recorder ([`metrics`]).
//!
//! Each test file takes it with `mod common;` and uses what it needs.
#![allow(dead_code)]

pub mod calls;
pub mod events;
pub mod files;
pub mod grpc;
pub mod jwt;
pub mod metrics;
pub mod redis;
