//! `gkmctl`'s library: the REST client and the `show crypto gkm ...` text
//! layouts (docs/FEATURES.md sections 1, 4 and 5), as pure functions
//! from the API's JSON to text so golden tests pin them.

pub mod agent;
pub mod client;
pub mod show;
