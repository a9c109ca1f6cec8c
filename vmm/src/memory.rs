//! Guest RAM: each range mapped at a host address aligned to 2 MiB.
//!
//! KVM maps guest memory into the stage-2 (EPT/NPT) tables with a 2 MiB entry only where the
//! host address and the guest address agree modulo 2 MiB and the host page behind is huge
//! (transparent huge pages). An anonymous mapping from a plain `mmap` starts wherever the
//! kernel puts it, so the guest took one nested page fault per 4 KiB page it touched: about
//! 6,300 of a boot's 8,000 exits to the agent (128 MiB guest, measured in the rig with
//! `kvm:kvm_exit` tracing); aligned, about 1,100 of 2,700.
//!
//! The mappings live as long as the VMM process: the memory is shared with device threads
//! for the VM's whole life, and the process ends with the VM.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestRegionMmap};

use crate::arch::layout;
use crate::virtio::GuestMemoryMmap;

/// The alignment of every guest RAM range in the host's address space.
pub const RAM_ALIGN: usize = 2 << 20;

const PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;

/// What backs a guest RAM range.
#[derive(Clone, Copy)]
enum Backing<'a> {
    /// Private anonymous memory.
    Anonymous,
    /// A file from an offset, mapped shared (a memfd that vhost-user backends map too).
    Shared(&'a std::fs::File, u64),
    /// A file from an offset, mapped private: copy on write, so pages the guest never writes
    /// stay the file's pages in the host's page cache, shared by every VM that maps it.
    Private(&'a std::fs::File, u64),
}

impl Backing<'_> {
    fn flags(&self) -> i32 {
        match self {
            Backing::Anonymous => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            Backing::Shared(..) => libc::MAP_SHARED,
            Backing::Private(..) => libc::MAP_PRIVATE | libc::MAP_NORESERVE,
        }
    }
}

/// Maps `len` bytes of `backing` at a host address aligned to [`RAM_ALIGN`]. Returns the
/// address.
fn map_aligned(len: usize, backing: Backing) -> io::Result<*mut u8> {
    let span = len.checked_add(RAM_ALIGN).ok_or_else(|| io::Error::other("size overflow"))?;
    // SAFETY: a new reservation (no access) that nothing else uses; the result is checked.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(RAM_ALIGN);
    let flags = backing.flags();
    let (fd, off) = match backing {
        Backing::Anonymous => (-1, 0),
        Backing::Shared(f, offset) | Backing::Private(f, offset) => {
            (f.as_raw_fd(), offset as libc::off_t)
        }
    };
    // SAFETY: [aligned, aligned + len) lies inside the reservation made above, which only
    // this function knows of; MAP_FIXED replaces that part of it.
    let mapped = unsafe {
        libc::mmap(aligned as *mut libc::c_void, len, PROT, flags | libc::MAP_FIXED, fd, off)
    };
    if mapped == libc::MAP_FAILED {
        let e = io::Error::last_os_error();
        // SAFETY: the reservation is ours and holds nothing.
        unsafe { libc::munmap(raw, span) };
        return Err(e);
    }
    if let Backing::Private(f, offset) = backing {
        if let Err(e) = anonymous_holes(mapped, len, f, offset) {
            // SAFETY: the reservation is ours, holding only the mapping just made.
            unsafe { libc::munmap(raw, span) };
            return Err(e);
        }
    }
    // The head and tail of the reservation stay reserved (no access, no memory): a thread
    // stack placed there would sit 2 MiB-aligned beside the RAM and be backed by a huge
    // page of its own.
    // SAFETY: `mapped` is the mapping just made.
    unsafe {
        // Not copied into a child, and never merged with a neighbouring mapping (the VMM's
        // own memory is counted apart from guest RAM by mapping).
        libc::madvise(mapped, len, libc::MADV_DONTFORK);
    }
    Ok(mapped.cast())
}

/// In the private mapping of `file` from `offset` at `base` (`len` bytes, 2 MiB-aligned),
/// maps anonymous memory over every 2 MiB chunk the file holds no data for (a hole: RAM the
/// snapshot's guest never used). Such a chunk reads zeros either way, but a write to
/// anonymous memory takes a zeroed page, where a private file mapping first reads the file's
/// hole into the page cache and then copies it. The chunks take 4 KiB pages, not
/// transparent huge pages: a restored pod writes a few MiB scattered over its free memory,
/// and a huge page per chunk touched made each idle pod hold 1.6 MiB more (measured in the
/// rig, 5 pods: 15.8 vs 14.2 MiB PSS per VMM) for no faster start. Chunks with data stay
/// the file's, shared until written. A file system without `SEEK_DATA` reports all data:
/// nothing is replaced.
fn anonymous_holes(
    base: *mut libc::c_void,
    len: usize,
    file: &std::fs::File,
    offset: u64,
) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let seek = |at: usize, whence: i32| -> io::Result<usize> {
        let pos = offset + at as u64;
        // SAFETY: lseek on a descriptor we hold; it moves only that descriptor's offset,
        // which nothing else uses (mappings and positioned reads ignore it).
        let r = unsafe { libc::lseek(fd, pos as libc::off_t, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            // No data at or after `pos`.
            return if e.raw_os_error() == Some(libc::ENXIO) { Ok(len) } else { Err(e) };
        }
        Ok((r as u64).saturating_sub(offset).min(len as u64) as usize)
    };
    let mut at = 0usize;
    while at < len {
        let data = seek(at, libc::SEEK_DATA)?;
        let hole_end = data / RAM_ALIGN * RAM_ALIGN;
        if hole_end > at {
            // SAFETY: [base + at, base + hole_end) lies inside the mapping the caller made
            // and owns, which holds nothing of anyone else's; MAP_FIXED replaces that part.
            let r = unsafe {
                libc::mmap(
                    base.cast::<u8>().add(at).cast(),
                    hole_end - at,
                    PROT,
                    Backing::Anonymous.flags() | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: advice on the anonymous mapping just made.
            unsafe { libc::madvise(r, hole_end - at, libc::MADV_NOHUGEPAGE) };
        }
        if data >= len {
            break;
        }
        let hole = seek(data, libc::SEEK_HOLE)?;
        at = hole.next_multiple_of(RAM_ALIGN).max(hole_end + RAM_ALIGN);
    }
    Ok(())
}

/// Guest RAM of `size` bytes: private anonymous memory, or with `shared` one memory file
/// (memfd) mapped shared, whose descriptor vhost-user backends map as well.
pub fn guest_memory(size: u64, shared: bool) -> Result<GuestMemoryMmap, String> {
    let ranges = layout::ram_ranges(size);
    let file = if shared { Some(memory_file(size)?) } else { None };
    map_ranges(&ranges, file.as_ref().map(|f| (f, false)), 0)
}

/// A new, empty memory file (memfd) of `size` bytes for guest RAM.
fn memory_file(size: u64) -> Result<Arc<std::fs::File>, String> {
    // SAFETY: memfd_create with a NUL-terminated name and flags; the result is checked.
    let fd = unsafe { libc::memfd_create(c"ironpod-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("memfd_create: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(size).map_err(|e| format!("size the memory file: {e}"))?;
    Ok(Arc::new(file))
}

/// Whether every range of `mem` is a memory file mapped shared (vhost-user backends can map
/// it).
pub fn is_shared(mem: &GuestMemoryMmap) -> bool {
    use vm_memory::GuestMemoryBackend;
    mem.iter().all(|r| r.file_offset().is_some() && r.flags() & libc::MAP_SHARED != 0)
}

/// Moves guest RAM `mem` into a new memory file mapped shared at the same host addresses,
/// so that a vhost-user backend plugged in while the VM runs can map it: what a VM started
/// with private memory (anonymous, or a template's memory file mapped copy-on-write) does
/// only when it first needs it. Every page holding anything but zeros is copied; the rest
/// stay holes of the new file (no memory). KVM's memory slots keep their addresses: its
/// page tables follow the new mapping (the kernel's MMU notifiers drop the old pages).
///
/// The caller keeps every writer of guest memory still meanwhile (vCPUs paused, the
/// devices' event loop busy with this call): a write between a page's copy and the new
/// mapping would be lost. Returns the memory as it is now mapped. On an error some ranges
/// may have moved already, each with its data: the guest's memory is intact either way.
pub fn share_in_place(mem: &GuestMemoryMmap) -> Result<GuestMemoryMmap, String> {
    use std::os::unix::fs::FileExt;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};
    const PAGE: usize = 4096;
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    let file = memory_file(total)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    let mut placed = Vec::new();
    for region in mem.iter() {
        let len = region.len() as usize;
        let mut at = 0usize;
        while at < len {
            let n = (len - at).min(buf.len());
            region
                .read_slice(&mut buf[..n], vm_memory::MemoryRegionAddress(at as u64))
                .map_err(|e| format!("read guest memory: {e}"))?;
            // Runs of pages that are not all zeros, written at once.
            let mut page = 0;
            while page < n {
                let is_zero = |p: usize| all_zeros(&buf[p..(p + PAGE).min(n)]);
                if is_zero(page) {
                    page += PAGE;
                    continue;
                }
                let start = page;
                while page < n && !is_zero(page) {
                    page += PAGE;
                }
                let end = page.min(n);
                file.write_all_at(&buf[start..end], offset + (at + start) as u64)
                    .map_err(|e| format!("write the memory file: {e}"))?;
            }
            at += n;
        }
        placed.push((region.as_ptr(), len, region.start_addr(), offset));
        offset += len as u64;
    }
    let flags = Backing::Shared(&file, 0).flags();
    let mut regions = Vec::with_capacity(placed.len());
    for (ptr, len, addr, offset) in placed {
        // SAFETY: [ptr, ptr + len) is one of guest RAM's mappings, made by this module and
        // never unmapped; MAP_FIXED puts the memory file (which holds the same data) in its
        // place, at the same address, so every pointer into it stays valid.
        let r = unsafe {
            libc::mmap(
                ptr.cast(),
                len,
                PROT,
                flags | libc::MAP_FIXED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(format!("map the memory file: {}", io::Error::last_os_error()));
        }
        // SAFETY: advice on the mapping just made (see `map_aligned`).
        unsafe { libc::madvise(r, len, libc::MADV_DONTFORK) };
        let b = MmapRegionBuilder::new(len)
            .with_mmap_prot(PROT)
            .with_mmap_flags(flags)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset));
        // SAFETY: `ptr` is a live mapping of `len` bytes (remapped above) never unmapped.
        let region = unsafe { b.with_raw_mmap_pointer(ptr) }.build().map_err(|e| e.to_string())?;
        regions.push(GuestRegionMmap::new(region, addr).ok_or("guest memory range overflows")?);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| e.to_string())
}

/// Gives KVM the guest RAM `mem`, one memory slot per range. The mappings live as long as
/// the process (see the module's comment), so as long as the VM.
pub fn register(vm: &kvm_ioctls::VmFd, mem: &GuestMemoryMmap) -> Result<(), kvm_ioctls::Error> {
    use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion};
    for (slot, region) in mem.iter().enumerate() {
        let r = kvm_bindings::kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the region is a live mapping that is never unmapped (guest RAM lives as
        // long as the process); the ranges do not overlap.
        unsafe { vm.set_user_memory_region(r) }?;
    }
    Ok(())
}

/// Guest RAM of `size` bytes mapped private from `file` (a snapshot's memory file), its
/// ranges one after the other from `offset`: copy on write.
pub fn guest_memory_from_file(
    size: u64,
    file: Arc<std::fs::File>,
    offset: u64,
) -> Result<GuestMemoryMmap, String> {
    map_ranges(&layout::ram_ranges(size), Some((&file, true)), offset)
}

/// Guest RAM of `size` bytes in a new memory file mapped shared (as [`guest_memory`] with
/// `shared`) holding a copy of `file`'s data from `offset` (a snapshot's memory file, its
/// ranges one after the other): a restored VM whose memory vhost-user backends map too. Only
/// what `file` holds data for is copied; its holes stay holes (no memory).
pub fn guest_memory_copied(
    size: u64,
    file: &std::fs::File,
    offset: u64,
) -> Result<GuestMemoryMmap, String> {
    use std::os::unix::fs::FileExt;
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};
    let mem = guest_memory(size, true)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut region_at = offset;
    for region in mem.iter() {
        let end = region_at + region.len();
        let mut pos = region_at;
        while let Some((data, hole)) =
            next_data(file, pos, end).map_err(|e| format!("read the memory file: {e}"))?
        {
            let mut at = data;
            while at < hole {
                let n = ((hole - at) as usize).min(buf.len());
                file.read_exact_at(&mut buf[..n], at)
                    .map_err(|e| format!("read the memory file at {at}: {e}"))?;
                let gpa = vm_memory::GuestAddress(region.start_addr().0 + (at - region_at));
                mem.write_slice(&buf[..n], gpa).map_err(|e| format!("copy guest memory: {e}"))?;
                at += n as u64;
            }
            pos = hole;
        }
        region_at = end;
    }
    Ok(mem)
}

fn all_zeros(bytes: &[u8]) -> bool {
    bytes.chunks(64).all(|c| c.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// The next stretch of `file` in `[pos, end)` that holds data (`SEEK_DATA`/`SEEK_HOLE`): its
/// start and end, or `None`. A file system without them reports all data.
fn next_data(file: &std::fs::File, pos: u64, end: u64) -> io::Result<Option<(u64, u64)>> {
    let seek = |at: u64, whence: i32| -> io::Result<Option<u64>> {
        // SAFETY: lseek on a descriptor we hold; it moves only that descriptor's offset,
        // which nothing else uses (positioned reads ignore it).
        let r = unsafe { libc::lseek(file.as_raw_fd(), at as libc::off_t, whence) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
        }
        Ok(Some(r as u64))
    };
    if pos >= end {
        return Ok(None);
    }
    let Some(data) = seek(pos, libc::SEEK_DATA)? else { return Ok(None) };
    if data >= end {
        return Ok(None);
    }
    let hole = seek(data, libc::SEEK_HOLE)?.unwrap_or(end).min(end);
    Ok(Some((data, hole)))
}

/// Maps `ranges`: anonymous, or from the file (private or shared) one after the other.
fn map_ranges(
    ranges: &[(vm_memory::GuestAddress, usize)],
    file: Option<(&Arc<std::fs::File>, bool)>,
    mut offset: u64,
) -> Result<GuestMemoryMmap, String> {
    let mut regions = Vec::with_capacity(ranges.len());
    for &(addr, len) in ranges {
        let backing = match file {
            None => Backing::Anonymous,
            Some((f, false)) => Backing::Shared(f, offset),
            Some((f, true)) => Backing::Private(f, offset),
        };
        let ptr = map_aligned(len, backing)
            .map_err(|e| format!("map {len} bytes of guest memory: {e}"))?;
        let mut b =
            MmapRegionBuilder::new(len).with_mmap_prot(PROT).with_mmap_flags(backing.flags());
        if let Some((f, _)) = file {
            b = b.with_file_offset(FileOffset::from_arc(f.clone(), offset));
        }
        // SAFETY: `ptr` is a live mapping of `len` bytes made above that is never unmapped.
        let region = unsafe { b.with_raw_mmap_pointer(ptr) }.build().map_err(|e| e.to_string())?;
        regions.push(GuestRegionMmap::new(region, addr).ok_or("guest memory range overflows")?);
        offset += len as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn a_copy_into_shared_memory_keeps_data_and_holes() {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let size = 16u64 << 20;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"header").unwrap();
        f.set_len(6 + size).unwrap();
        f.write_all_at(b"low", 6 + 0x1000).unwrap();
        f.write_all_at(&[9u8; 3 << 20], 6 + (9 << 20)).unwrap();
        let mem = guest_memory_copied(size, &f, 6).unwrap();
        assert!(mem.iter().all(|r| r.file_offset().is_some()), "shared, for vhost-user");
        let mut b = [0u8; 3];
        mem.read_slice(&mut b, GuestAddress(0x1000)).unwrap();
        assert_eq!(&b, b"low");
        assert_eq!(mem.read_obj::<u8>(GuestAddress((12 << 20) - 1)).unwrap(), 9);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(12 << 20)).unwrap(), 0);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0)).unwrap(), 0);
        // The holes took no memory in the new file.
        let fd = mem.iter().next().unwrap().file_offset().unwrap().file().metadata().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert!(fd.blocks() * 512 < (6 << 20), "{} bytes allocated", fd.blocks() * 512);
    }

    #[test]
    fn private_memory_moves_into_a_shared_file_in_place() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        // Anonymous memory and a template's memory file mapped private, both above and
        // below the 32-bit gap.
        let size = (3u64 << 30) + (8 << 20);
        let f = Arc::new(tempfile::tempfile().unwrap());
        f.set_len(size).unwrap();
        f.write_all_at(b"from the file", 5 << 20).unwrap();
        let mems =
            [guest_memory(size, false).unwrap(), guest_memory_from_file(size, f, 0).unwrap()];
        for (i, mem) in mems.into_iter().enumerate() {
            assert!(!is_shared(&mem));
            let high = GuestAddress(mem.iter().last().unwrap().start_addr().0 + 0x3000);
            mem.write_slice(b"written", GuestAddress(0x1234)).unwrap();
            mem.write_slice(b"up high", high).unwrap();
            let old_ptr = mem.get_host_address(GuestAddress(0x1234)).unwrap();
            let shared = share_in_place(&mem).unwrap();
            assert!(is_shared(&shared));
            assert_eq!(shared.get_host_address(GuestAddress(0x1234)).unwrap(), old_ptr);
            let read = |m: &GuestMemoryMmap, at: GuestAddress, n: usize| {
                let mut b = vec![0u8; n];
                m.read_slice(&mut b, at).unwrap();
                b
            };
            assert_eq!(read(&shared, GuestAddress(0x1234), 7), b"written");
            assert_eq!(read(&shared, high, 7), b"up high");
            let from_file = read(&shared, GuestAddress(5 << 20), 13);
            let expected: &[u8] = if i == 1 { b"from the file" } else { &[0u8; 13] };
            assert_eq!(from_file, expected);
            // Writes through the old description land in the same (now shared) memory,
            // and so in the file a backend would map.
            mem.write_slice(b"later", GuestAddress(0x8000)).unwrap();
            let region = shared.iter().next().unwrap();
            let fo = region.file_offset().unwrap();
            let mut b = [0u8; 5];
            fo.file().read_exact_at(&mut b, fo.start() + 0x8000).unwrap();
            assert_eq!(&b, b"later");
            // Only pages with data were copied.
            let blocks = fo.file().metadata().unwrap().blocks() * 512;
            assert!(blocks < (1 << 20), "{blocks} bytes allocated");
        }
    }

    /// The VmFlags line of the mapping of /proc/self/smaps that holds `addr`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(flags) = line.strip_prefix("VmFlags:") {
                    return flags.to_string();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn a_private_file_mapping_takes_small_anonymous_pages_for_its_holes() {
        use std::os::unix::fs::FileExt;
        let size = 16u64 << 20;
        let f = Arc::new(tempfile::tempfile().unwrap());
        f.set_len(4096 + size).unwrap();
        f.write_all_at(&[7u8; 4096], 4096 + (4 << 20)).unwrap();
        let mem = guest_memory_from_file(size, f.clone(), 4096).unwrap();
        let r = mem.iter().next().unwrap();
        let base = r.as_ptr() as usize;
        assert_eq!(mem.read_obj::<u8>(GuestAddress(4 << 20)).unwrap(), 7);
        // The chunk with data stays the file's; the holes around it are anonymous memory
        // without huge pages.
        let data_flags = vm_flags(base + (4 << 20));
        let hole_flags = vm_flags(base + (8 << 20));
        assert!(!data_flags.contains(" nh"), "{data_flags}");
        assert!(hole_flags.contains(" nh"), "{hole_flags}");
        mem.write_obj(1u8, GuestAddress(8 << 20)).unwrap();
        assert_eq!(mem.read_obj::<u8>(GuestAddress(8 << 20)).unwrap(), 1);
        assert_eq!(f.metadata().unwrap().len(), 4096 + size, "the file is not written");
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 4096 + (8 << 20)).unwrap();
        assert_eq!(b[0], 0);
    }

    #[test]
    fn every_range_is_aligned_and_usable() {
        // Below and above the 32-bit gap; private and shared.
        for size in [16u64 << 20, 3 << 30, (3 << 30) + (64 << 20)] {
            for shared in [false, true] {
                let mem = guest_memory(size, shared).unwrap();
                assert_eq!(mem.iter().map(|r| r.len()).sum::<u64>(), size);
                for r in mem.iter() {
                    let host = r.as_ptr() as usize;
                    let guest = r.start_addr().0 as usize;
                    assert_eq!(host % RAM_ALIGN, 0, "host address {host:#x}");
                    assert_eq!(guest % RAM_ALIGN, 0);
                    assert_eq!(r.file_offset().is_some(), shared);
                }
                let last = GuestAddress(mem.iter().last().unwrap().last_addr().0 - 7);
                mem.write_obj(0x1234_5678_9abc_def0u64, last).unwrap();
                assert_eq!(mem.read_obj::<u64>(last).unwrap(), 0x1234_5678_9abc_def0);
            }
        }
    }
}
