//! `gkm-tests`: cross-crate scenarios and the helpers they share: pcap
//! writing and tshark as an independent decoder.

pub mod api;
pub mod metrics_doc;
pub mod pcap;
pub mod procs;
pub mod tshark;
