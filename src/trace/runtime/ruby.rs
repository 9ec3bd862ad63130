//! Ruby.

use crate::trace::Rule;

#[derive(Default)]
pub(crate) struct Ruby;

impl Rule for Ruby {}
