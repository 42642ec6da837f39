//! `herald`: not wired yet.

fn main() {}
