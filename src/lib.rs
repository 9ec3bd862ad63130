//! pare: make container images safe to run.
//!
//! The data flow is one straight line, each stage a module:
//! [`reference`](mod@reference) → [`transport`] (`source`: registry, OCI layout, docker archive) →
//! [`rootfs`] → [`trace`] (the rule kit and the evidence rules) → [`plan`] → [`layer`] writer →
//! [`probe`] → [`transport`] (a `Sink`, then the referrers: SBOM, [`sign`]atures),
//! orchestrated by [`harden`] and [`batch`] and described by [`report`].
//!
//! The modules sit in layers, bottom to top: model ([`error`], [`digest`], [`reference`](mod@reference),
//! [`image`], [`elf`], [`ldcache`], [`targuard`], [`growing`], [`progress`], [`par`]); [`rootfs`];
//! [`transport`] and [`sign`]; [`packages`]; [`trace`]; [`plan`], [`layer`], [`sbom`];
//! [`policy`], [`probe`]; [`report`]; [`harden`], [`batch`], [`inspect`], [`serve`]. A module imports its
//! own layer and the ones below, never one above (`tests/architecture.rs`).

pub mod batch;
pub mod digest;
pub mod elf;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod growing;
pub mod harden;
pub mod image;
pub mod inspect;
pub mod layer;
pub mod ldcache;
pub mod packages;
pub mod par;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod progress;
pub mod reference;
pub mod report;
pub mod rootfs;
pub mod sbom;
pub mod serve;
pub mod sign;
pub mod targuard;
pub mod trace;
pub mod transport;

pub use error::{Error, Result};
