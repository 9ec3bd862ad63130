//! `pare serve` (issue 22, under way): hardening on push. So far the events a registry sends,
//! read into pushes to harden or skips with their reasons ([`events`]), who may post them
//! ([`auth`]), and the durable job queue ([`queue`]); the HTTP service and the metrics follow
//! (docs/serve-plan.md).

pub mod auth;
pub mod events;
pub mod queue;
