//! Just enough of the i8042 keyboard controller for the guest to reset the machine
//! (`reboot=k`): the command 0xFE on port 0x64 pulses the CPU reset line, which ends the VM.

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// Data port (0x60) to command port (0x64) span, as one bus range.
pub const I8042_BASE: u64 = 0x60;
/// Bytes covered: 0x60..=0x64.
pub const I8042_LEN: u64 = 5;
const CMD_RESET_CPU: u8 = 0xfe;
const COMMAND_OFFSET: u64 = 4;

/// The controller. Reads say "no data, input buffer empty" so the guest's wait loops end.
pub struct I8042 {
    reset_evt: EventFd,
}

impl I8042 {
    /// Signals `reset_evt` when the guest asks for a CPU reset.
    pub fn new(reset_evt: EventFd) -> Self {
        I8042 { reset_evt }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            let _ = self.reset_evt.write(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_signals() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut dev = I8042::new(evt.try_clone().unwrap());
        dev.write(0, &[CMD_RESET_CPU]);
        assert!(evt.read().is_err(), "data port writes don't reset");
        dev.write(4, &[0x20]);
        assert!(evt.read().is_err());
        dev.write(4, &[CMD_RESET_CPU]);
        assert_eq!(evt.read().unwrap(), 1);
        let mut d = [0xffu8];
        dev.read(4, &mut d);
        assert_eq!(d, [0]);
    }
}
