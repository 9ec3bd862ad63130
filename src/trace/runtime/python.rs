//! Python.

use crate::trace::Rule;

#[derive(Default)]
pub(crate) struct Python;

impl Rule for Python {}
