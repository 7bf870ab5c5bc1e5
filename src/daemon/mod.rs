pub mod control;
pub mod socket;
