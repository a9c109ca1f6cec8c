//! Tiny hand-made guests for tests: a few bytes of 32-bit code in an ELF with a PVH entry
//! note. They run on any KVM, including software-nested ones that cannot boot Linux.

/// Where the code is loaded and entered.
pub const LOAD_ADDR: u32 = 0x10_0000;

/// Bytes that print `c` on COM1.
pub fn out_char(c: u8) -> Vec<u8> {
    vec![0x66, 0xba, 0xf8, 0x03, 0xb0, c, 0xee] // mov dx,0x3f8; mov al,c; out dx,al
}

/// Bytes that pulse the i8042 reset line, then halt forever.
pub fn reset() -> Vec<u8> {
    vec![0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd] // mov al,0xfe; out 0x64,al; hlt; jmp hlt
}

/// An ELF64 image with one PT_LOAD of `code` at 1 MiB and a Xen PVH entry note.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[0..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little endian
    f[6] = 1; // version
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&(LOAD_ADDR as u64).to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let phdr = |f: &mut Vec<u8>, at: usize, ty: u32, off: u64, addr: u64, size: u64| {
        f[at..at + 4].copy_from_slice(&ty.to_le_bytes());
        f[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
        f[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes());
        f[at + 24..at + 32].copy_from_slice(&addr.to_le_bytes());
        f[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        f[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        f[at + 48..at + 56].copy_from_slice(&4u64.to_le_bytes());
    };
    phdr(&mut f, 64, 1, 0x1000, LOAD_ADDR as u64, code.len() as u64);
    phdr(&mut f, 120, 4, 0xb0, 0, 20);
    let note = 0xb0;
    f[note..note + 4].copy_from_slice(&4u32.to_le_bytes()); // namesz
    f[note + 4..note + 8].copy_from_slice(&4u32.to_le_bytes()); // descsz
    f[note + 8..note + 12].copy_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    f[note + 12..note + 16].copy_from_slice(b"Xen\0");
    f[note + 16..note + 20].copy_from_slice(&LOAD_ADDR.to_le_bytes());
    f.extend_from_slice(code);
    f
}

/// Bytes that halt forever (the VM stays up until it is killed).
pub fn halt() -> Vec<u8> {
    vec![0xf4, 0xeb, 0xfd] // hlt; jmp hlt
}
