//! The 8250 UART at COM1 (port 0x3f8, IRQ 4): the guest console, built on vm-superio.
//!
//! Output goes to the VMM's stdout, a file, or nowhere. Input is not connected: the guest is
//! driven over vsock, and a console that reads the VMM's stdin would steal the terminal of
//! whoever started it. A console that lands in a file (directly, or through a stdout that is
//! a regular file, as a jailed VMM's is) keeps at most [`CONSOLE_FILE_LIMIT`] bytes: the
//! guest's first words (its boot, the agent's errors) stay; what a guest writes past that is
//! dropped, after one line saying so, so a guest cannot fill the host's disk (or its jail's
//! tmpfs, which holds its sockets too) through its console.

use std::fs::OpenOptions;
use std::io::{self, Write};

use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;
use crate::config::SerialOutput;

/// Bytes a console file may hold, counting what it held when the VMM opened it.
pub const CONSOLE_FILE_LIMIT: u64 = 4 << 20;

/// The line that ends a console file that reached [`CONSOLE_FILE_LIMIT`].
const DROPPED: &[u8] =
    b"\n[ironpod-vmm: the console log reached its limit; later output is dropped]\n";

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

    /// The size of the file behind this sink, when it is a regular file (a file sink, or a
    /// stdout redirected to one); `None` for a terminal, pipe or nothing.
    fn file_size(&self) -> Option<u64> {
        use std::os::fd::AsFd;
        let meta = match self {
            SerialSink::Stdout(s) => {
                s.as_fd().try_clone_to_owned().and_then(|fd| std::fs::File::from(fd).metadata())
            }
            SerialSink::File(f) => f.metadata(),
            SerialSink::Off => return None,
        };
        meta.ok().filter(|m| m.is_file()).map(|m| m.len())
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
/// with its own syscall would slow the console down for nothing. Output to a regular file
/// stops at a limit.
pub struct LineBuffered {
    inner: SerialSink,
    buf: Vec<u8>,
    /// Bytes the file may still take, when it is a file; 0 once the limit was reached.
    room: Option<u64>,
}

impl LineBuffered {
    /// Wraps a sink; a regular file behind it gets [`CONSOLE_FILE_LIMIT`].
    pub fn new(inner: SerialSink) -> Self {
        Self::with_limit(inner, CONSOLE_FILE_LIMIT)
    }

    fn with_limit(inner: SerialSink, limit: u64) -> Self {
        let room = inner.file_size().map(|size| limit.saturating_sub(size));
        LineBuffered { inner, buf: Vec::with_capacity(256), room }
    }
}

impl Write for LineBuffered {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if matches!(self.inner, SerialSink::Off) || self.room == Some(0) {
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
            let r = match &mut self.room {
                None => self.inner.write_all(&self.buf),
                Some(room) => {
                    let fits = self.buf.len().min(*room as usize);
                    let mut r = self.inner.write_all(&self.buf[..fits]);
                    *room -= fits as u64;
                    if *room == 0 {
                        // The last words: said once, then nothing more reaches the file.
                        r = r.and(self.inner.write_all(DROPPED));
                    }
                    r
                }
            };
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

    /// The UART's registers and receive FIFO, for a snapshot.
    pub fn save_state(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer,
        }
    }

    /// Takes back a snapshot's registers (output keeps going where this UART's goes).
    pub fn restore_state(&mut self, snap: &SerialSnapshot) -> Result<(), String> {
        if snap.in_buffer.len() > self.uart.fifo_capacity() + self.uart.state().in_buffer.len() {
            return Err("serial state: more received bytes than the FIFO holds".into());
        }
        let [dll, dlm, ier, iir, lcr, lsr, mcr, msr, scr] = snap.registers;
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: dll,
            baud_divisor_high: dlm,
            interrupt_enable: ier,
            interrupt_identification: iir,
            line_control: lcr,
            line_status: lsr,
            modem_control: mcr,
            modem_status: msr,
            scratch: scr,
            in_buffer: snap.in_buffer.clone(),
        };
        let evt = || self.uart.interrupt_evt().0.try_clone().map_err(|e| e.to_string());
        let (trigger, spare) = (IrqTrigger(evt()?), IrqTrigger(evt()?));
        // The writer moves from the old UART to the new one.
        let placeholder = Uart::new(spare, LineBuffered::new(SerialSink::Off));
        let out = std::mem::replace(&mut self.uart, placeholder).into_writer();
        self.uart = Uart::from_state(&state, trigger, vm_superio::serial::NoEvents, out)
            .map_err(|e| format!("serial state: {e:?}"))?;
        Ok(())
    }
}

/// The UART in a snapshot: DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR, and the receive FIFO.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    /// The registers, in the order above.
    pub registers: [u8; 9],
    /// Bytes received and not yet read by the guest.
    pub in_buffer: Vec<u8>,
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

    #[test]
    fn a_console_file_stops_at_its_limit_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, b"boot\n").unwrap();
        let sink = SerialSink::open(&SerialOutput::File(path.clone())).unwrap();
        let mut w = LineBuffered::with_limit(sink, 64);
        for _ in 0..1000 {
            w.write_all(b"flood flood flood\n").unwrap();
        }
        w.flush().unwrap();
        let mut want = b"boot\n".to_vec();
        want.extend(b"flood flood flood\n".iter().cycle().take(59));
        want.extend_from_slice(DROPPED);
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(&path).unwrap()),
            String::from_utf8_lossy(&want)
        );
        // A file already at its limit takes nothing more, not even the line.
        let sink = SerialSink::open(&SerialOutput::File(path.clone())).unwrap();
        let mut w = LineBuffered::with_limit(sink, 64);
        w.write_all(b"more\n").unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), want);
    }

    #[test]
    fn a_terminal_or_pipe_has_no_limit_and_a_redirected_stdout_has_one() {
        // The test harness's stdout is whatever ran it; only the kinds matter here.
        assert_eq!(SerialSink::Off.file_size(), None);
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(dir.path().join("f")).unwrap();
        assert_eq!(SerialSink::File(f).file_size(), Some(0));
        let (r, _w) = std::io::pipe().unwrap();
        let pipe = SerialSink::File(std::fs::File::from(std::os::fd::OwnedFd::from(r)));
        assert_eq!(pipe.file_size(), None);
    }
}
