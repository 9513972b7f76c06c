//! Cooperative key servers (docs/COOP.md): the parts a key server needs to
//! share a group with its peers. Sans IO like the rest of the crate; it
//! imports nothing from `ks` (the key server will compose it).

pub mod election;
