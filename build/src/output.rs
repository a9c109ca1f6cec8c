//! Where a build's progress goes. The builder's own lines and what RUN steps print are kept
//! apart, so that a front end can tell them apart: a step's output can print anything,
//! also text that looks like the builder's lines.

use std::io::{self, Write};

/// A build's progress.
pub trait BuildOutput {
    /// One line of the builder's own (`Step 2/6 : …`, ` ---> …`, `Successfully built …`).
    fn line(&mut self, line: &str) -> io::Result<()>;
    /// Bytes a RUN step printed, or a message about its run.
    fn output(&mut self, bytes: &[u8]) -> io::Result<()>;
}

/// A writer takes both as they come: the classic builder's plain output.
impl<W: Write + ?Sized> BuildOutput for W {
    fn line(&mut self, line: &str) -> io::Result<()> {
        writeln!(self, "{line}")?;
        self.flush()
    }

    fn output(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_all(bytes)?;
        self.flush()
    }
}
