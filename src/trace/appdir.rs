//! The application's own directory.

use super::Rule;

#[derive(Default)]
pub(crate) struct AppDir;

impl Rule for AppDir {}
