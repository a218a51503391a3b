//! The XDP backend: the steering program in the driver, AF_XDP sockets for the frames it takes
//! and for every reply, and the ring buffer of frames it tees.

pub mod backend;
pub mod program;
pub mod steering;
pub mod xsk;

#[cfg(test)]
mod test_support;

pub use program::{AttachMode, XdpAttachment, XdpError, XdpProgram};
