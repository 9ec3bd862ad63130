//! Language runtimes, found from the interpreter binary (its name, its location, the
//! libraries it links), not from a distribution's package names: each rule keeps the
//! interpreter's start-up set and what the application imports, resolved the way the
//! interpreter resolves it, and claims the runtime's trees so the generic rules leave them
//! alone.

pub(crate) mod java;
pub(crate) mod node;
pub(crate) mod perl;
pub(crate) mod php;
pub(crate) mod python;
pub(crate) mod ruby;
