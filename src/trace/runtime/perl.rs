//! Perl.

use crate::trace::Rule;

#[derive(Default)]
pub(crate) struct Perl;

impl Rule for Perl {}
