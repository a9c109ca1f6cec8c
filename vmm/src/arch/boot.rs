//! Loading the guest kernel, initrd and command line, and writing the boot information the
//! kernel reads first: the PVH `hvm_start_info` for an ELF vmlinux with a PVH note, or the
//! Linux zero page for a bzImage (and an ELF without a PVH note).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Cmdline, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::layout::*;
use crate::virtio::GuestMemoryMmap;

/// Errors while loading the kernel or writing boot structures.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The kernel or initrd file could not be opened or read.
    #[error("cannot read {what} {path}: {source}")]
    Open {
        /// "kernel" or "initrd".
        what: &'static str,
        /// Path given in the config.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is neither an ELF vmlinux nor a bzImage.
    #[error("kernel {0} is neither an ELF vmlinux nor a bzImage")]
    UnknownKernelFormat(String),
    /// linux-loader refused the image.
    #[error("cannot load kernel: {0}")]
    Load(#[from] linux_loader::loader::Error),
    /// The initrd does not fit in guest memory.
    #[error("initrd of {size} bytes does not fit in guest memory")]
    InitrdTooBig {
        /// Initrd size.
        size: u64,
    },
    /// The command line is invalid or too long.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// Writing boot structures failed.
    #[error("cannot write boot information: {0}")]
    Configure(#[from] linux_loader::configurator::Error),
    /// Guest memory access failed.
    #[error("guest memory: {0}")]
    Memory(#[from] vm_memory::GuestMemoryError),
}

/// How the boot vCPU has to be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 32-bit protected mode, paging off, `rbx` = start_info (PVH boot protocol).
    Pvh,
    /// 64-bit long mode with identity paging, `rsi` = zero page (Linux 64-bit boot protocol).
    Linux64,
}

/// Where execution starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    /// Entry point guest physical address.
    pub entry: GuestAddress,
    /// Protocol.
    pub mode: EntryMode,
}

struct Loaded {
    entry: BootEntry,
    kernel_end: u64,
    setup_header: Option<linux_loader::loader::bootparam::setup_header>,
}

fn open(what: &'static str, path: &Path) -> Result<File, BootError> {
    File::open(path).map_err(|source| BootError::Open {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn load_kernel(mem: &GuestMemoryMmap, path: &Path) -> Result<Loaded, BootError> {
    let mut f = open("kernel", path)?;
    let io = |source| BootError::Open { what: "kernel", path: path.display().to_string(), source };
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).map_err(io)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    if &magic == b"\x7fELF" {
        let r = Elf::load(mem, None, &mut f, Some(GuestAddress(HIMEM_START)))?;
        let entry = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => {
                BootEntry { entry: addr, mode: EntryMode::Pvh }
            }
            _ => BootEntry { entry: r.kernel_load, mode: EntryMode::Linux64 },
        };
        return Ok(Loaded { entry, kernel_end: r.kernel_end, setup_header: None });
    }
    let r = BzImage::load(
        mem,
        Some(GuestAddress(HIMEM_START)),
        &mut f,
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(|e| match e {
        linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::InvalidBzImage,
        ) => BootError::UnknownKernelFormat(path.display().to_string()),
        e => BootError::Load(e),
    })?;
    // The 64-bit entry point of a bzImage is 0x200 past the protected-mode code.
    let entry = BootEntry { entry: r.kernel_load.unchecked_add(0x200), mode: EntryMode::Linux64 };
    Ok(Loaded { entry, kernel_end: r.kernel_end, setup_header: r.setup_header })
}

/// Places the initrd at the top of low RAM (page aligned); returns (address, size).
fn load_initrd(
    mem: &GuestMemoryMmap,
    path: &Path,
    mem_size: u64,
    kernel_end: u64,
) -> Result<(GuestAddress, u64), BootError> {
    let mut f = open("initrd", path)?;
    let io = |source| BootError::Open { what: "initrd", path: path.display().to_string(), source };
    let size = f.metadata().map_err(io)?.len();
    let top = low_ram_end(mem_size);
    let addr =
        top.checked_sub(size).map(|a| a & !0xfff).filter(|a| *a >= kernel_end.max(HIMEM_START));
    let Some(addr) = addr else { return Err(BootError::InitrdTooBig { size }) };
    let mut read = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while read < size {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        mem.write_slice(&buf[..n], GuestAddress(addr + read))?;
        read += n as u64;
    }
    if read != size {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "initrd shrank while reading",
        )));
    }
    Ok((GuestAddress(addr), size))
}

/// An e820-style RAM/reserved map of the guest.
fn memory_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    const RAM: u32 = 1;
    const RESERVED: u32 = 2;
    let mut m = vec![
        (0, EBDA_START, RAM),
        (EBDA_START, HIMEM_START - EBDA_START, RESERVED),
        (HIMEM_START, low_ram_end(mem_size) - HIMEM_START, RAM),
    ];
    if mem_size > MMIO_GAP_START {
        m.push((MMIO_GAP_END, mem_size - MMIO_GAP_START, RAM));
    }
    m
}

/// Everything needed to boot: kernel + initrd loaded, command line written, boot structures
/// in place. Returns where the boot vCPU starts.
pub fn load(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &Cmdline,
) -> Result<BootEntry, BootError> {
    let loaded = load_kernel(mem, kernel)?;
    let initrd = match initrd {
        Some(p) => Some(load_initrd(mem, p, mem_size, loaded.kernel_end)?),
        None => None,
    };
    let cstr = cmdline.as_cstring().map_err(|e| BootError::Cmdline(e.to_string()))?;
    let cmd_bytes = cstr.as_bytes_with_nul();
    if cmd_bytes.len() > crate::config::MAX_CMDLINE_LEN {
        return Err(BootError::Cmdline(format!(
            "longer than {} bytes",
            crate::config::MAX_CMDLINE_LEN
        )));
    }
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline)?;
    let map = memory_map(mem_size);

    match loaded.entry.mode {
        EntryMode::Pvh => {
            let mut info = hvm_start_info {
                magic: 0x336e_c578, // XEN_HVM_START_MAGIC_VALUE
                version: 1,
                cmdline_paddr: CMDLINE_START,
                memmap_paddr: PVH_MEMMAP_START,
                memmap_entries: map.len() as u32,
                ..Default::default()
            };
            let memmap: Vec<hvm_memmap_table_entry> = map
                .iter()
                .map(|&(addr, size, type_)| hvm_memmap_table_entry {
                    addr,
                    size,
                    type_,
                    reserved: 0,
                })
                .collect();
            let mut params;
            if let Some((addr, size)) = initrd {
                info.nr_modules = 1;
                info.modlist_paddr = PVH_MODLIST_START;
                params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
                let module =
                    hvm_modlist_entry { paddr: addr.raw_value(), size, ..Default::default() };
                params.set_modules(&[module], GuestAddress(PVH_MODLIST_START));
            } else {
                params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
            }
            params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
            PvhBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)?;
        }
        EntryMode::Linux64 => {
            let mut bp = boot_params::default();
            if let Some(h) = loaded.setup_header {
                bp.hdr = h;
            } else {
                bp.hdr.header = 0x5372_6448; // "HdrS"
                bp.hdr.kernel_alignment = 0x0100_0000;
            }
            bp.hdr.type_of_loader = 0xff;
            bp.hdr.boot_flag = 0xaa55;
            bp.hdr.cmd_line_ptr = CMDLINE_START as u32;
            bp.hdr.cmdline_size = cmd_bytes.len() as u32;
            if let Some((addr, size)) = initrd {
                bp.hdr.ramdisk_image = addr.raw_value() as u32;
                bp.hdr.ramdisk_size = size as u32;
            }
            for (i, &(addr, size, type_)) in map.iter().enumerate() {
                bp.e820_table[i] = boot_e820_entry { addr, size, r#type: type_ };
            }
            bp.e820_entries = map.len() as u8;
            let params = BootParams::new(&bp, GuestAddress(ZERO_PAGE_START));
            LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(&params, mem)?;
        }
    }
    Ok(loaded.entry)
}

/// Checks that `addr..addr+len` is inside guest RAM (for tests and callers placing data).
pub fn in_ram(mem: &GuestMemoryMmap, addr: u64, len: usize) -> bool {
    mem.check_range(GuestAddress(addr), len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&ram_ranges(64 << 20)).unwrap()
    }

    #[test]
    fn rejects_non_kernels() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[0u8; 8192]).unwrap();
        let cmd = Cmdline::new(64).unwrap();
        let e = load(&mem(), 64 << 20, f.path(), None, &cmd).unwrap_err();
        assert!(matches!(e, BootError::UnknownKernelFormat(_)), "{e}");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"\x7fELF garbage").unwrap();
        assert!(load(&mem(), 64 << 20, f.path(), None, &cmd).is_err());
        let e = load(&mem(), 64 << 20, Path::new("/nonexistent/kernel"), None, &cmd).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kernel"), "{e}");
        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(load(&mem(), 64 << 20, empty.path(), None, &cmd).is_err());
    }

    #[test]
    fn initrd_too_big() {
        let m = GuestMemoryMmap::from_ranges(&ram_ranges(4 << 20)).unwrap();
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(8 << 20).unwrap();
        assert!(matches!(
            load_initrd(&m, f.path(), 4 << 20, 0),
            Err(BootError::InitrdTooBig { .. })
        ));
    }

    #[test]
    fn initrd_at_top_of_ram() {
        let m = mem();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        let (addr, size) = load_initrd(&m, f.path(), 64 << 20, 2 << 20).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(addr.raw_value() % 4096, 0);
        assert!(addr.raw_value() + size <= 64 << 20);
        let mut b = [0u8; 1];
        m.read_slice(&mut b, addr.unchecked_add(4999)).unwrap();
        assert_eq!(b[0], 7);
    }

    #[test]
    fn memory_map_covers_ram() {
        let m = memory_map(8 << 30);
        let ram: u64 = m.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
        assert_eq!(ram, (8 << 30) - (HIMEM_START - EBDA_START));
    }
}
