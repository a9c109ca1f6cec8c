//! The 8250 UART at COM1 (port 0x3f8, IRQ 4): the guest console, built on vm-superio.
//!
//! Output goes to the VMM's stdout, a file, or nowhere. Input is not connected: the guest is
//! driven over vsock, and a console that reads the VMM's stdin would steal the terminal of
//! whoever started it.

use std::fs::OpenOptions;
use std::io::{self, Write};

use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::config::SerialOutput;

/// COM1 base port.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of ports a UART occupies.
pub const COM_PORTS: u64 = 8;

/// Raises the serial IRQ through an irqfd.
pub struct IrqTrigger(pub EventFd);

impl Trigger for IrqTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Where console bytes go.
pub enum SerialSink {
    /// Standard output.
    Stdout(io::Stdout),
    /// A file opened for append.
    File(std::fs::File),
    /// Nowhere.
    Off,
}

impl SerialSink {
    /// Opens the sink the configuration asks for.
    pub fn open(cfg: &SerialOutput) -> io::Result<Self> {
        Ok(match cfg {
            SerialOutput::Stdout => SerialSink::Stdout(io::stdout()),
            SerialOutput::Off => SerialSink::Off,
            SerialOutput::File(p) => {
                SerialSink::File(OpenOptions::new().create(true).append(true).open(p)?)
            }
        })
    }
}

impl Write for SerialSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SerialSink::Stdout(s) => s.write(buf),
            SerialSink::File(f) => f.write(buf),
            SerialSink::Off => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SerialSink::Stdout(s) => s.flush(),
            SerialSink::File(f) => f.flush(),
            SerialSink::Off => Ok(()),
        }
    }
}

/// A line-buffering writer: the UART hands over one byte at a time; writing each to stdout
/// with its own syscall would slow the console down for nothing.
pub struct LineBuffered {
    inner: SerialSink,
    buf: Vec<u8>,
}

impl LineBuffered {
    /// Wraps a sink.
    pub fn new(inner: SerialSink) -> Self {
        LineBuffered { inner, buf: Vec::with_capacity(256) }
    }
}

impl Write for LineBuffered {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if matches!(self.inner, SerialSink::Off) {
            return Ok(data.len());
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 4096 || data.contains(&b'\n') {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let r = self.inner.write_all(&self.buf);
            self.buf.clear();
            r?;
        }
        self.inner.flush()
    }
}

/// The COM1 device on the port I/O bus.
pub struct Serial {
    uart: Uart<IrqTrigger, vm_superio::serial::NoEvents, LineBuffered>,
}

impl Serial {
    /// A UART that raises `irq` and writes to `out`.
    pub fn new(irq: EventFd, out: SerialSink) -> Self {
        Serial { uart: Uart::new(IrqTrigger(irq), LineBuffered::new(out)) }
    }

    /// Writes out anything still buffered.
    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if data.len() != 1 || offset >= COM_PORTS {
            data.fill(0xff);
            return;
        }
        data[0] = self.uart.read(offset as u8);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if data.len() != 1 || offset >= COM_PORTS {
            return;
        }
        // An error here is a failed console write or interrupt: the guest must keep running.
        let _ = self.uart.write(offset as u8, data[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_file_and_raise_irq() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = Serial::new(
            irq.try_clone().unwrap(),
            SerialSink::open(&SerialOutput::File(path.clone())).unwrap(),
        );
        // Enable the "transmitter holding register empty" interrupt.
        s.write(1, &[0x02]);
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        s.flush();
        assert_eq!(std::fs::read(&path).unwrap(), b"hi\n");
        assert!(irq.read().unwrap() >= 1);
        // Bad access widths are ignored.
        s.write(0, &[1, 2]);
        let mut d = [0u8; 2];
        s.read(0, &mut d);
        assert_eq!(d, [0xff, 0xff]);
    }
}
