//! Language understanding for Crossline (work in progress; see issue 3).
