//! The hostile guest: hand-assembled 32-bit code (no Linux, so any KVM runs it) that owns
//! its "kernel" completely and turns it on its own devices. It finds every virtio-mmio
//! device by its registers, then:
//!
//! 1. vsock, by the rules: says `R` and waits for the host to connect to it, then
//!    connects to host port [`HOST_PORT`] again and again and sends 4 KiB stream packets as
//!    fast as the device takes them, ignoring the credit the host gives it;
//! 2. vsock, against the rules: moves the tx avail index far ahead, then forward without
//!    pause;
//! 3. every device, [`ROUNDS`] times: random descriptor tables and rings, random queue
//!    sizes and ring addresses, a correct initialisation around them, notifications on
//!    every queue, then random writes and reads anywhere in the register window;
//!
//! prints a letter after each step and `done`, and resets the machine.
//!
//! What it hands devices to write into is in [`BUF`] or outside guest memory, never its own
//! code, stack or rings, and the numbers it leaves in memory for devices to read (such as
//! balloon page numbers) are never below 64 K, so whatever a device does with them, the
//! program itself runs to the end and the outcome is the VMM's alone.

use iced_x86::code_asm::*;

/// virtio-mmio windows, one page each.
const MMIO: u32 = 0xd000_0000;
const SLOTS: u32 = 16;
const MAGIC: u32 = 0x7472_6976;
/// Per slot: three queues of 64 KiB (descriptors, avail ring at +4 KiB, used at +8 KiB).
const QAREA: u32 = 0x40_0000;
/// Where devices may write: 16 MiB..32 MiB.
const BUF: u32 = 0x100_0000;
/// The vsock packets it sends (headers and payload).
const PKT: u32 = 0x90_0000;
/// Indirect descriptor tables: 8192 random descriptors (as those of the rings), written
/// once; nothing hands a device this memory to write.
const ITAB: u32 = 0x280_0000;
/// What balloon descriptors point at: numbers of at least 64 K (page frames far beyond
/// guest memory), written once; nothing hands a device this memory to write.
const SAFE: u32 = 0x2c0_0000;
const SAFE_LEN: u32 = 0x14_0000;
const STACK: u32 = 0x9_0000;
/// Variables: the queue size to set up; whether the current device is the balloon.
const QSIZE: u32 = 0x8_0000;
const IS_BALLOON: u32 = 0x8_0004;
const BALLOON_ID: u32 = 5;
const VSOCK_ID: u32 = 19;
/// The host port it connects to (`v.sock_<port>` in the VM's directory).
pub const HOST_PORT: u32 = 1234;
/// Stream packets sent in step 1 (4 KiB each).
pub const FLOOD: u32 = 40_000;
/// Rounds of step 3.
pub const ROUNDS: u32 = 48;
/// Payload of one stream packet.
const PAYLOAD: u32 = 4096;

fn r(e: IcedError) -> String {
    e.to_string()
}

/// The guest's code, to load at `load_addr`.
pub fn program(load_addr: u64) -> Result<Vec<u8>, String> {
    let mut a = CodeAssembler::new(32).map_err(r)?;
    let mut rand = a.create_label();
    let mut find_dev = a.create_label();
    let mut slot_area = a.create_label();
    let mut zero = a.create_label();
    let mut init_dev = a.create_label();
    let mut putc = a.create_label();
    let mut step3 = a.create_label();
    let mut random_desc = a.create_label();

    a.mov(esp, STACK).map_err(r)?;
    a.mov(esi, 0x1234_5679u32).map_err(r)?;
    print(&mut a, putc, b"H")?;
    // The indirect tables and the balloon's page numbers.
    a.mov(dword_ptr(IS_BALLOON), 0u32).map_err(r)?;
    a.mov(ebx, ITAB).map_err(r)?;
    a.mov(ecx, 8192u32).map_err(r)?;
    let mut itab = a.create_label();
    a.set_label(&mut itab).map_err(r)?;
    a.call(random_desc).map_err(r)?;
    a.add(ebx, 16).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(itab).map_err(r)?;
    a.mov(ebx, SAFE).map_err(r)?;
    a.mov(ecx, SAFE_LEN / 4).map_err(r)?;
    let mut safe = a.create_label();
    a.set_label(&mut safe).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.or(eax, 0x1_0000).map_err(r)?;
    a.mov(dword_ptr(ebx), eax).map_err(r)?;
    a.add(ebx, 4).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(safe).map_err(r)?;

    // ---- 1: vsock by the rules, credit ignored ----
    a.mov(eax, VSOCK_ID).map_err(r)?;
    a.call(find_dev).map_err(r)?;
    a.test(edi, edi).map_err(r)?;
    a.jz(step3).map_err(r)?;
    a.call(slot_area).map_err(r)?;
    a.mov(ebx, ebp).map_err(r)?;
    a.mov(ecx, 0x3_0000u32 / 4).map_err(r)?;
    a.call(zero).map_err(r)?;
    a.mov(dword_ptr(QSIZE), 256u32).map_err(r)?;
    a.call(init_dev).map_err(r)?;
    // rx (queue 0): 256 device-writable 4 KiB buffers in BUF, all offered.
    a.xor(ecx, ecx).map_err(r)?;
    a.mov(ebx, ebp).map_err(r)?;
    a.mov(eax, BUF).map_err(r)?;
    let mut rx_fill = a.create_label();
    a.set_label(&mut rx_fill).map_err(r)?;
    a.mov(dword_ptr(ebx), eax).map_err(r)?;
    a.mov(dword_ptr(ebx + 4), 0u32).map_err(r)?;
    a.mov(dword_ptr(ebx + 8), 4096u32).map_err(r)?;
    a.mov(dword_ptr(ebx + 12), 2u32).map_err(r)?; // VIRTQ_DESC_F_WRITE, next 0
    a.mov(word_ptr(ebp + ecx * 2 + 0x1004), cx).map_err(r)?;
    a.add(ebx, 16).map_err(r)?;
    a.add(eax, 4096).map_err(r)?;
    a.inc(ecx).map_err(r)?;
    a.cmp(ecx, 256).map_err(r)?;
    a.jb(rx_fill).map_err(r)?;
    a.mov(word_ptr(ebp + 0x1002), cx).map_err(r)?;
    a.mov(dword_ptr(edi + 0x50), 0u32).map_err(r)?;
    print(&mut a, putc, b"R")?; // ready: the host may connect now
                                // Wait (bounded) for the host to connect to us: its request fills an rx buffer.
    a.mov(ecx, 20_000_000u32).map_err(r)?;
    let mut wait_host = a.create_label();
    let mut host_came = a.create_label();
    a.set_label(&mut wait_host).map_err(r)?;
    a.cmp(word_ptr(ebp + 0x2002), 0).map_err(r)?;
    a.jne(host_came).map_err(r)?;
    a.pause().map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(wait_host).map_err(r)?;
    print(&mut a, putc, b"T")?; // timed out: go on all the same
    a.set_label(&mut host_came).map_err(r)?;
    print(&mut a, putc, b"C")?;
    // Packets: a connection request at PKT, a stream packet at PKT + 0x1000.
    a.mov(eax, dword_ptr(edi + 0x100)).map_err(r)?; // the guest's cid
    for (at, op, len) in [(PKT, 1u32, 0u32), (PKT + 0x1000, 5, PAYLOAD)] {
        a.mov(dword_ptr(at), eax).map_err(r)?; // src_cid
        a.mov(dword_ptr(at + 4), 0u32).map_err(r)?;
        a.mov(dword_ptr(at + 8), 2u32).map_err(r)?; // dst_cid: the host
        a.mov(dword_ptr(at + 12), 0u32).map_err(r)?;
        a.mov(dword_ptr(at + 16), 7000u32).map_err(r)?; // src_port
        a.mov(dword_ptr(at + 20), HOST_PORT).map_err(r)?; // dst_port
        a.mov(dword_ptr(at + 24), len).map_err(r)?;
        a.mov(dword_ptr(at + 28), 1 | (op << 16)).map_err(r)?; // type stream, op
        a.mov(dword_ptr(at + 32), 0u32).map_err(r)?; // flags
        a.mov(dword_ptr(at + 36), 1u32 << 18).map_err(r)?; // buf_alloc
        a.mov(dword_ptr(at + 40), 0u32).map_err(r)?; // fwd_cnt
    }
    // tx (queue 1) descriptors: 0 the request, 1..=127 the stream packet.
    a.lea(ebx, ebp + 0x1_0000).map_err(r)?;
    a.mov(dword_ptr(ebx), PKT).map_err(r)?;
    a.mov(dword_ptr(ebx + 4), 0u32).map_err(r)?;
    a.mov(dword_ptr(ebx + 8), 44u32).map_err(r)?;
    a.mov(dword_ptr(ebx + 12), 0u32).map_err(r)?;
    a.mov(ecx, 127u32).map_err(r)?;
    let mut tx_desc = a.create_label();
    a.set_label(&mut tx_desc).map_err(r)?;
    a.add(ebx, 16).map_err(r)?;
    a.mov(dword_ptr(ebx), PKT + 0x1000).map_err(r)?;
    a.mov(dword_ptr(ebx + 4), 0u32).map_err(r)?;
    a.mov(dword_ptr(ebx + 8), 44 + PAYLOAD).map_err(r)?;
    a.mov(dword_ptr(ebx + 12), 0u32).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(tx_desc).map_err(r)?;
    // The flood: packet n is a request when n % 512 == 0, else stream data; the guest keeps
    // at most a ring's worth in flight and gives up if the device stops taking them.
    a.xor(ebx, ebx).map_err(r)?;
    let mut flood = a.create_label();
    let mut room = a.create_label();
    let mut stalled = a.create_label();
    let mut no_kick = a.create_label();
    let mut step2 = a.create_label();
    a.set_label(&mut flood).map_err(r)?;
    a.mov(ecx, 100_000_000u32).map_err(r)?;
    let mut wait_room = a.create_label();
    a.set_label(&mut wait_room).map_err(r)?;
    a.movzx(eax, word_ptr(ebp + 0x1_2002)).map_err(r)?; // tx used idx
    a.mov(edx, ebx).map_err(r)?;
    a.sub(edx, eax).map_err(r)?;
    a.and(edx, 0xffff).map_err(r)?;
    a.cmp(edx, 256).map_err(r)?;
    a.jb(room).map_err(r)?;
    a.pause().map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(wait_room).map_err(r)?;
    a.jmp(stalled).map_err(r)?;
    a.set_label(&mut room).map_err(r)?;
    a.mov(eax, ebx).map_err(r)?;
    a.and(eax, 127).map_err(r)?;
    a.or(eax, 1).map_err(r)?; // 1..=127: stream data
    a.test(ebx, 511).map_err(r)?;
    a.jnz(no_kick).map_err(r)?;
    a.xor(eax, eax).map_err(r)?; // every 512th: a new request
    a.set_label(&mut no_kick).map_err(r)?;
    a.mov(edx, ebx).map_err(r)?;
    a.and(edx, 255).map_err(r)?;
    a.mov(word_ptr(ebp + edx * 2 + 0x1_1004), ax).map_err(r)?;
    a.inc(ebx).map_err(r)?;
    a.mov(word_ptr(ebp + 0x1_1002), bx).map_err(r)?;
    a.mov(dword_ptr(edi + 0x50), 1u32).map_err(r)?;
    a.cmp(ebx, FLOOD).map_err(r)?;
    a.jb(flood).map_err(r)?;
    print(&mut a, putc, b"F")?;
    a.jmp(step2).map_err(r)?;
    a.set_label(&mut stalled).map_err(r)?;
    print(&mut a, putc, b"S")?;

    // ---- 2: the tx avail index far ahead, then forward without pause ----
    a.set_label(&mut step2).map_err(r)?;
    a.add(bx, 0x7000).map_err(r)?;
    a.mov(word_ptr(ebp + 0x1_1002), bx).map_err(r)?;
    a.mov(dword_ptr(edi + 0x50), 1u32).map_err(r)?;
    a.mov(ecx, 20_000u32).map_err(r)?;
    let mut ahead = a.create_label();
    a.set_label(&mut ahead).map_err(r)?;
    a.inc(ebx).map_err(r)?;
    a.mov(word_ptr(ebp + 0x1_1002), bx).map_err(r)?;
    a.test(ecx, 63).map_err(r)?;
    let mut quiet = a.create_label();
    a.jnz(quiet).map_err(r)?;
    a.mov(dword_ptr(edi + 0x50), 1u32).map_err(r)?;
    a.set_label(&mut quiet).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(ahead).map_err(r)?;
    print(&mut a, putc, b"2")?;

    // ---- 3: every device, random everything ----
    a.set_label(&mut step3).map_err(r)?;
    a.push(ROUNDS).map_err(r)?;
    let mut round = a.create_label();
    a.set_label(&mut round).map_err(r)?;
    // Fresh random data in a 64 KiB piece of BUF (what devices read as payloads, page
    // numbers, requests), every number at least 64 K.
    a.call(rand).map_err(r)?;
    a.and(eax, 0x00ff_0000).map_err(r)?;
    a.lea(ebx, eax + BUF as i32).map_err(r)?;
    a.mov(ecx, 0x4000u32).map_err(r)?;
    let mut fill = a.create_label();
    a.set_label(&mut fill).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.or(eax, 0x1_0000).map_err(r)?;
    a.mov(dword_ptr(ebx), eax).map_err(r)?;
    a.add(ebx, 4).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(fill).map_err(r)?;
    a.mov(edi, MMIO).map_err(r)?;
    let mut slot = a.create_label();
    let mut next_slot = a.create_label();
    a.set_label(&mut slot).map_err(r)?;
    a.cmp(dword_ptr(edi), MAGIC).map_err(r)?;
    a.jne(next_slot).map_err(r)?;
    a.call(slot_area).map_err(r)?;
    a.xor(eax, eax).map_err(r)?;
    a.cmp(dword_ptr(edi + 8), BALLOON_ID).map_err(r)?;
    a.sete(al).map_err(r)?;
    a.mov(dword_ptr(IS_BALLOON), eax).map_err(r)?;
    // Random descriptor tables (addresses in BUF, or beyond guest memory) and rings.
    a.mov(ebx, ebp).map_err(r)?;
    a.mov(ecx, 3u32 * 256).map_err(r)?;
    let mut desc = a.create_label();
    a.set_label(&mut desc).map_err(r)?;
    a.call(random_desc).map_err(r)?;
    a.test(dword_ptr(ebx + 12), 4).map_err(r)?;
    let mut direct = a.create_label();
    a.jz(direct).map_err(r)?;
    // An indirect table: one of ours.
    a.call(rand).map_err(r)?;
    a.and(eax, 0xfff0).map_err(r)?;
    a.add(eax, ITAB).map_err(r)?;
    a.mov(dword_ptr(ebx), eax).map_err(r)?;
    a.mov(dword_ptr(ebx + 4), 0u32).map_err(r)?;
    a.and(dword_ptr(ebx + 8), 0xfff0).map_err(r)?;
    a.set_label(&mut direct).map_err(r)?;
    a.mov(eax, ecx).map_err(r)?;
    a.and(eax, 255).map_err(r)?;
    a.cmp(eax, 1).map_err(r)?;
    let mut not_ring_start = a.create_label();
    a.jne(not_ring_start).map_err(r)?;
    // After a queue's 256 descriptors: its avail ring, random entries and index.
    a.push(ecx).map_err(r)?;
    a.push(ebx).map_err(r)?;
    a.and(ebx, 0xffff_0000u32).map_err(r)?;
    a.add(ebx, 0x1000).map_err(r)?;
    a.mov(ecx, 130u32).map_err(r)?;
    let mut avail = a.create_label();
    a.set_label(&mut avail).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.and(eax, 0x01ff_01ff).map_err(r)?;
    a.mov(dword_ptr(ebx), eax).map_err(r)?;
    a.add(ebx, 4).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(avail).map_err(r)?;
    a.pop(ebx).map_err(r)?;
    a.pop(ecx).map_err(r)?;
    a.set_label(&mut not_ring_start).map_err(r)?;
    a.add(ebx, 16).map_err(r)?;
    a.mov(eax, ecx).map_err(r)?;
    a.and(eax, 255).map_err(r)?;
    let mut same_queue = a.create_label();
    a.cmp(eax, 1).map_err(r)?;
    a.jne(same_queue).map_err(r)?;
    a.add(ebx, 0x1_0000 - 0x1000).map_err(r)?; // the next queue's table
    a.set_label(&mut same_queue).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(desc).map_err(r)?;
    // A correct initialisation with a random queue size (0..511: some too big, some not
    // powers of two), notifications on every queue.
    a.call(rand).map_err(r)?;
    a.and(eax, 0x1ff).map_err(r)?;
    a.mov(dword_ptr(QSIZE), eax).map_err(r)?;
    a.call(init_dev).map_err(r)?;
    for q in 0..4u32 {
        a.mov(dword_ptr(edi + 0x50), q).map_err(r)?;
    }
    // Random register writes and reads anywhere in the window (ring addresses at least
    // 64 MiB: outside guest memory).
    a.mov(ecx, 24u32).map_err(r)?;
    let mut poke = a.create_label();
    let mut not_addr = a.create_label();
    a.set_label(&mut poke).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.mov(ebx, eax).map_err(r)?;
    a.and(ebx, 0x1fc).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.cmp(ebx, 0x80).map_err(r)?;
    a.jb(not_addr).map_err(r)?;
    a.cmp(ebx, 0xa8).map_err(r)?;
    a.jae(not_addr).map_err(r)?;
    a.or(eax, 0x0400_0000).map_err(r)?;
    a.set_label(&mut not_addr).map_err(r)?;
    a.mov(dword_ptr(edi + ebx), eax).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.and(eax, 0x1fc).map_err(r)?;
    a.mov(eax, dword_ptr(edi + eax)).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(poke).map_err(r)?;
    a.set_label(&mut next_slot).map_err(r)?;
    a.add(edi, 0x1000).map_err(r)?;
    a.cmp(edi, MMIO + SLOTS * 0x1000).map_err(r)?;
    a.jb(slot).map_err(r)?;
    a.dec(dword_ptr(esp)).map_err(r)?;
    a.jnz(round).map_err(r)?;
    print(&mut a, putc, b"3done\n")?;
    a.mov(al, 0xfe).map_err(r)?; // reset through the i8042
    a.out(0x64, al).map_err(r)?;
    let mut halt = a.create_label();
    a.set_label(&mut halt).map_err(r)?;
    a.hlt().map_err(r)?;
    a.jmp(halt).map_err(r)?;

    // rand: eax = next xorshift32 of esi; clobbers edx.
    a.set_label(&mut rand).map_err(r)?;
    a.mov(eax, esi).map_err(r)?;
    for (left, n) in [(true, 13), (false, 17), (true, 5)] {
        a.mov(edx, eax).map_err(r)?;
        if left {
            a.shl(edx, n).map_err(r)?;
        } else {
            a.shr(edx, n).map_err(r)?;
        }
        a.xor(eax, edx).map_err(r)?;
    }
    a.mov(esi, eax).map_err(r)?;
    a.ret().map_err(r)?;

    // random_desc: a random descriptor at ebx: its buffer in BUF (the balloon's in SAFE,
    // never indirect), or 1 in 16 beyond 4 GiB at any offset; any length below 256 KiB,
    // any flags, next below 512. Clobbers eax, edx.
    a.set_label(&mut random_desc).map_err(r)?;
    a.call(rand).map_err(r)?;
    let mut not_balloon = a.create_label();
    let mut addr_set = a.create_label();
    a.cmp(dword_ptr(IS_BALLOON), 0).map_err(r)?;
    a.je(not_balloon).map_err(r)?;
    a.and(eax, 0x000f_fff0).map_err(r)?;
    a.add(eax, SAFE).map_err(r)?;
    a.jmp(addr_set).map_err(r)?;
    a.set_label(&mut not_balloon).map_err(r)?;
    a.and(eax, 0x00ff_fff0).map_err(r)?;
    a.or(eax, BUF).map_err(r)?;
    a.set_label(&mut addr_set).map_err(r)?;
    a.mov(dword_ptr(ebx), eax).map_err(r)?;
    a.mov(dword_ptr(ebx + 4), 0u32).map_err(r)?;
    a.call(rand).map_err(r)?;
    let mut low = a.create_label();
    a.test(eax, 0xf0).map_err(r)?;
    a.jnz(low).map_err(r)?;
    a.or(eax, 1).map_err(r)?;
    a.mov(dword_ptr(ebx + 4), eax).map_err(r)?;
    a.mov(dword_ptr(ebx), eax).map_err(r)?;
    a.set_label(&mut low).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.and(eax, 0x3_ffff).map_err(r)?;
    a.mov(dword_ptr(ebx + 8), eax).map_err(r)?;
    a.call(rand).map_err(r)?;
    a.and(eax, 0x01ff_0007).map_err(r)?;
    let mut flags_set = a.create_label();
    a.cmp(dword_ptr(IS_BALLOON), 0).map_err(r)?;
    a.je(flags_set).map_err(r)?;
    a.and(eax, !4u32).map_err(r)?;
    a.set_label(&mut flags_set).map_err(r)?;
    a.mov(dword_ptr(ebx + 12), eax).map_err(r)?;
    a.ret().map_err(r)?;

    // find_dev: edi = the window of the first device whose id is eax, else 0.
    a.set_label(&mut find_dev).map_err(r)?;
    a.mov(edi, MMIO).map_err(r)?;
    let mut probe = a.create_label();
    let mut skip = a.create_label();
    let mut found = a.create_label();
    a.set_label(&mut probe).map_err(r)?;
    a.cmp(dword_ptr(edi), MAGIC).map_err(r)?;
    a.jne(skip).map_err(r)?;
    a.cmp(dword_ptr(edi + 8), eax).map_err(r)?;
    a.je(found).map_err(r)?;
    a.set_label(&mut skip).map_err(r)?;
    a.add(edi, 0x1000).map_err(r)?;
    a.cmp(edi, MMIO + SLOTS * 0x1000).map_err(r)?;
    a.jb(probe).map_err(r)?;
    a.xor(edi, edi).map_err(r)?;
    a.set_label(&mut found).map_err(r)?;
    a.ret().map_err(r)?;

    // slot_area: ebp = QAREA + slot * 256 KiB for the window in edi.
    a.set_label(&mut slot_area).map_err(r)?;
    a.mov(ebp, edi).map_err(r)?;
    a.sub(ebp, MMIO).map_err(r)?;
    a.shl(ebp, 6).map_err(r)?;
    a.add(ebp, QAREA).map_err(r)?;
    a.ret().map_err(r)?;

    // zero: ecx dwords from ebx.
    a.set_label(&mut zero).map_err(r)?;
    a.mov(dword_ptr(ebx), 0u32).map_err(r)?;
    a.add(ebx, 4).map_err(r)?;
    a.dec(ecx).map_err(r)?;
    a.jnz(zero).map_err(r)?;
    a.ret().map_err(r)?;

    // init_dev: resets the device in edi and sets it up as a driver would: every feature
    // it offers, queues 0..3 of size min([QSIZE], max) in its area (ebp), DRIVER_OK.
    a.set_label(&mut init_dev).map_err(r)?;
    a.push(ecx).map_err(r)?;
    a.mov(dword_ptr(edi + 0x70), 0u32).map_err(r)?;
    a.mov(dword_ptr(edi + 0x70), 3u32).map_err(r)?;
    for sel in [0u32, 1] {
        a.mov(dword_ptr(edi + 0x14), sel).map_err(r)?;
        a.mov(eax, dword_ptr(edi + 0x10)).map_err(r)?;
        a.mov(dword_ptr(edi + 0x24), sel).map_err(r)?;
        a.mov(dword_ptr(edi + 0x20), eax).map_err(r)?;
    }
    a.mov(dword_ptr(edi + 0x70), 11u32).map_err(r)?;
    a.xor(ecx, ecx).map_err(r)?;
    let mut queue = a.create_label();
    let mut queues_done = a.create_label();
    a.set_label(&mut queue).map_err(r)?;
    a.mov(dword_ptr(edi + 0x30), ecx).map_err(r)?;
    a.mov(eax, dword_ptr(edi + 0x34)).map_err(r)?;
    a.test(eax, eax).map_err(r)?;
    a.jz(queues_done).map_err(r)?;
    a.mov(edx, dword_ptr(QSIZE)).map_err(r)?;
    a.cmp(edx, eax).map_err(r)?;
    a.cmova(edx, eax).map_err(r)?;
    a.mov(dword_ptr(edi + 0x38), edx).map_err(r)?;
    a.mov(eax, ecx).map_err(r)?;
    a.shl(eax, 16).map_err(r)?;
    a.add(eax, ebp).map_err(r)?;
    for reg in [0x80, 0x90, 0xa0] {
        a.mov(dword_ptr(edi + reg), eax).map_err(r)?;
        a.mov(dword_ptr(edi + (reg + 4)), 0u32).map_err(r)?;
        a.add(eax, 0x1000).map_err(r)?;
    }
    a.mov(dword_ptr(edi + 0x44), 1u32).map_err(r)?;
    a.inc(ecx).map_err(r)?;
    a.cmp(ecx, 4).map_err(r)?;
    a.jb(queue).map_err(r)?;
    a.set_label(&mut queues_done).map_err(r)?;
    a.mov(dword_ptr(edi + 0x70), 15u32).map_err(r)?;
    a.pop(ecx).map_err(r)?;
    a.ret().map_err(r)?;

    // putc: al to COM1.
    a.set_label(&mut putc).map_err(r)?;
    a.push(edx).map_err(r)?;
    a.mov(dx, 0x3f8u32 as i32).map_err(r)?;
    a.out(dx, al).map_err(r)?;
    a.pop(edx).map_err(r)?;
    a.ret().map_err(r)?;

    a.assemble(load_addr).map_err(r)
}

fn print(a: &mut CodeAssembler, putc: CodeLabel, text: &[u8]) -> Result<(), String> {
    for &c in text {
        a.mov(al, c as u32).map_err(r)?;
        a.call(putc).map_err(r)?;
    }
    Ok(())
}
