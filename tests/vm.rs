//! Real firmware clients: QEMU virtual machines on a tap in the lab's rack namespace, their
//! serial console in a file, and what they printed read back as boot stages.
//!
//! The facts this follows are DESIGN.md's "Test lab facts": always `-nodefaults` (no user-mode
//! NIC reaching outside), `-no-reboot`, a tap NIC with `script=no,downscript=no`; SeaBIOS with
//! QEMU's iPXE NIC ROM on `-M pc,graphics=off`; OVMF on q35 with a per-VM copy of the VARS
//! file and `romfile=` (no NIC ROM) so EDK2's own PXE or HTTP client runs; PXEv4/PXEv6
//! switched off through fw_cfg for HTTP boot; the HTTPS CA through
//! `etc/edk2/https/cacerts`. The host's KVM here is a PVM one that OVMF and the iPXE ROM
//! cannot run on, so [`accelerator`] picks TCG unless a usable KVM is found.
//!
//! arm64 machines (DESIGN.md, "arm64 firmware under TCG works") are `qemu-system-aarch64 -M
//! virt` under TCG (an x86 host's KVM cannot run them) with AAVMF, Debian 12's
//! `qemu-efi-aarch64`: the code read-only and a per-VM copy of the VARS file, the virtio NIC
//! with `romfile=` so EDK2's own PXE client runs, and the console on the PL011 (`ttyAMA0`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use boot_common::wire::MacAddr;

use crate::{ChildGuard, NetNs};

/// Debian 12's OVMF (package `ovmf`). DESIGN.md lists what it does (PXE, HTTP and HTTPS boot,
/// the virtio-net driver).
pub const OVMF_DIR: &str = "/usr/share/OVMF";
/// The firmware code, read-only.
pub const OVMF_CODE: &str = "OVMF_CODE_4M.fd";
/// The empty variable store (no Secure Boot keys: Debian's unsigned iPXE would be refused),
/// copied per VM.
pub const OVMF_VARS: &str = "OVMF_VARS_4M.fd";
/// The Secure Boot build of the firmware code (SMM; Debian links `.ms.fd` to `.secboot.fd`).
pub const OVMF_CODE_SECURE_BOOT: &str = "OVMF_CODE_4M.ms.fd";
/// A variable store with Microsoft's keys enrolled and Secure Boot enforced (Debian's
/// `ovmf`), copied per VM: what servers ship with.
pub const OVMF_VARS_SECURE_BOOT: &str = "OVMF_VARS_4M.ms.fd";

/// Debian 12's AAVMF (package `qemu-efi-aarch64`): EDK2 for QEMU's arm64 `virt` machine.
pub const AAVMF_DIR: &str = "/usr/share/AAVMF";
/// Its code, read-only (64 MiB, the size of `virt`'s flash).
pub const AAVMF_CODE: &str = "AAVMF_CODE.fd";
/// Its empty variable store (no Secure Boot keys), copied per VM.
pub const AAVMF_VARS: &str = "AAVMF_VARS.fd";
/// The variable store with Microsoft's keys enrolled and Secure Boot on (the same code file
/// enforces it: Debian's `AAVMF_CODE.ms.fd` is a link to `AAVMF_CODE.fd`).
pub const AAVMF_VARS_MS: &str = "AAVMF_VARS.ms.fd";
/// What xdpboot's default GRUB config (ipxe/grub.cfg) prints before it loads the kernel.
pub const GRUB_CONFIG_READ: &str = "xdpboot: GRUB booting";
/// What xdpboot's default PXELINUX config (ipxe/pxelinux.cfg) says before the kernel.
pub const PXELINUX_CONFIG_READ: &str = "xdpboot: PXELINUX booting";
/// What the loader on a local-boot test's disk prints.
pub const LOCAL_DISK_MARKER: &str = "XDPBOOT-LOCAL-DISK";

/// What xdpboot's default script (ipxe/boot.ipxe) prints when its last attempt failed.
pub const SCRIPT_GAVE_UP: &str = "xdpboot: giving up after";

/// How the VM boots from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Firmware {
    /// SeaBIOS and QEMU's iPXE ROM of the virtio NIC (iPXE 2019: plain HTTP only).
    Bios,
    /// OVMF's own PXE client (the NIC ROM disabled): PXE → TFTP ipxe-amd64.efi → iPXE.
    UefiPxe,
    /// OVMF UEFI HTTP boot (PXE disabled): the loader over HTTP(S), no TFTP at all.
    UefiHttp,
    /// OVMF's PXE over IPv6 (PXEv4 disabled): DHCPv6 → a Request to port 4011 → TFTP over IPv6
    /// ipxe-amd64.efi → iPXE, which configures IPv6 itself.
    UefiPxe6,
    /// OVMF UEFI HTTP boot over IPv6 (PXE disabled): DHCPv6 → the loader's http://[…] URL.
    UefiHttp6,
    /// [`Firmware::UefiPxe`] with Secure Boot enforced and Microsoft's keys enrolled.
    UefiPxeSecureBoot,
    /// [`Firmware::UefiHttp`] with Secure Boot enforced and Microsoft's keys enrolled.
    UefiHttpSecureBoot,
    /// An arm64 machine: AAVMF's own PXE client (arch 11) → TFTP ipxe-arm64.efi → iPXE.
    Arm64UefiPxe,
    /// An arm64 machine with Secure Boot enforced (Microsoft's keys): AAVMF's PXE → TFTP
    /// Debian's shimaa64.efi → grubaa64.efi (Debian-signed GRUB) → the Debian-signed kernel.
    Arm64UefiPxeSecureBoot,
}

/// The machine's CPU architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Arm64 => "qemu-system-aarch64",
        }
    }
}

impl Firmware {
    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::UefiPxe => "uefi",
            Firmware::UefiHttp => "uefi-http",
            Firmware::UefiPxe6 => "uefi-pxe6",
            Firmware::UefiHttp6 => "uefi-http6",
            Firmware::UefiPxeSecureBoot => "uefi-secureboot",
            Firmware::UefiHttpSecureBoot => "uefi-http-secureboot",
            Firmware::Arm64UefiPxe => "arm64-uefi",
            Firmware::Arm64UefiPxeSecureBoot => "arm64-uefi-secureboot",
        }
    }

    pub fn arch(self) -> Arch {
        match self {
            Firmware::Bios
            | Firmware::UefiPxe
            | Firmware::UefiHttp
            | Firmware::UefiPxe6
            | Firmware::UefiHttp6
            | Firmware::UefiPxeSecureBoot
            | Firmware::UefiHttpSecureBoot => Arch::X86_64,
            Firmware::Arm64UefiPxe | Firmware::Arm64UefiPxeSecureBoot => Arch::Arm64,
        }
    }

    /// OVMF (x86-64 UEFI): the firmware the lab gives its HTTPS CA through fw_cfg.
    pub fn is_ovmf(self) -> bool {
        matches!(
            self,
            Firmware::UefiPxe
                | Firmware::UefiHttp
                | Firmware::UefiPxe6
                | Firmware::UefiHttp6
                | Firmware::UefiPxeSecureBoot
                | Firmware::UefiHttpSecureBoot
        )
    }

    /// Boots over IPv6.
    pub fn is_ipv6(self) -> bool {
        matches!(self, Firmware::UefiPxe6 | Firmware::UefiHttp6)
    }

    /// UEFI HTTP boot rather than PXE.
    pub fn is_http_boot(self) -> bool {
        matches!(
            self,
            Firmware::UefiHttp | Firmware::UefiHttp6 | Firmware::UefiHttpSecureBoot
        )
    }

    /// Secure Boot enforced, Microsoft's keys enrolled.
    pub fn secure_boot(self) -> bool {
        matches!(
            self,
            Firmware::UefiPxeSecureBoot
                | Firmware::UefiHttpSecureBoot
                | Firmware::Arm64UefiPxeSecureBoot
        )
    }

    /// The chain the lab boots this firmware through by default: shim and GRUB under Secure
    /// Boot (Debian's iPXE is not signed), iPXE otherwise.
    pub fn default_chain(self) -> Chain {
        if self.secure_boot() {
            Chain::ShimGrub
        } else {
            Chain::Ipxe
        }
    }

    /// The loader this firmware fetches over TFTP through its default chain, if any.
    pub fn tftp_loader(self) -> Option<&'static str> {
        match self {
            Firmware::Bios
            | Firmware::UefiHttp
            | Firmware::UefiHttp6
            | Firmware::UefiHttpSecureBoot => None,
            Firmware::UefiPxe | Firmware::UefiPxe6 => Some("ipxe-amd64.efi"),
            Firmware::UefiPxeSecureBoot => Some("shimx64.efi"),
            Firmware::Arm64UefiPxe => Some("ipxe-arm64.efi"),
            Firmware::Arm64UefiPxeSecureBoot => Some("shimaa64.efi"),
        }
    }

    /// How the first stage travels, for summaries.
    pub fn first_stage(self) -> &'static str {
        match self {
            Firmware::Bios => "NIC ROM iPXE (no first-stage download)",
            Firmware::UefiPxe => "PXE, TFTP ipxe-amd64.efi",
            Firmware::UefiHttp => "UEFI HTTP boot of ipxe-amd64.efi",
            Firmware::UefiPxe6 => "PXE over IPv6, TFTP over IPv6 ipxe-amd64.efi",
            Firmware::UefiHttp6 => "UEFI HTTP boot over IPv6 of ipxe-amd64.efi",
            Firmware::UefiPxeSecureBoot => {
                "PXE with Secure Boot, TFTP shimx64.efi, then grubx64.efi"
            }
            Firmware::UefiHttpSecureBoot => {
                "UEFI HTTP boot with Secure Boot of shimx64.efi, then grubx64.efi"
            }
            Firmware::Arm64UefiPxe => "AAVMF PXE, TFTP ipxe-arm64.efi",
            Firmware::Arm64UefiPxeSecureBoot => {
                "AAVMF PXE with Secure Boot, TFTP shimaa64.efi, then grubaa64.efi"
            }
        }
    }

    /// The stages up to the first-stage loader, each with the serial-console text that shows
    /// it was reached (the first that appears counts).
    fn first_stages(self) -> &'static [Stage] {
        const BIOS: [Stage; 1] = [Stage::new(
            "NIC ROM iPXE",
            &["iPXE (http://ipxe.org)", "iPXE (https://ipxe.org)"],
        )];
        const UEFI_PXE: [Stage; 3] = [
            Stage::new("OVMF PXE started", &["Start PXE over IPv4"]),
            Stage::new("PXE DHCP done", &["Station IP address is"]),
            Stage::new("TFTP loader", &["NBP file downloaded successfully"]),
        ];
        // AAVMF is the same EDK2 network stack as OVMF and prints the same lines.
        const AAVMF_PXE: [Stage; 3] = [
            Stage::new("AAVMF PXE started", &["Start PXE over IPv4"]),
            UEFI_PXE[1],
            UEFI_PXE[2],
        ];
        const UEFI_HTTP: [Stage; 3] = [
            Stage::new("OVMF HTTP boot started", &["Start HTTP Boot over IPv4"]),
            Stage::new("HTTP boot DHCP done", &["Station IP address is"]),
            Stage::new("HTTP loader", &["Downloading...100%"]),
        ];
        const UEFI_PXE6: [Stage; 3] = [
            Stage::new("OVMF PXEv6 started", &["Start PXE over IPv6"]),
            Stage::new(
                "PXEv6 DHCP done",
                &["Station IP address is", "Station IPv6 address is"],
            ),
            Stage::new(
                "TFTP loader over IPv6",
                &["NBP file downloaded successfully"],
            ),
        ];
        const UEFI_HTTP6: [Stage; 3] = [
            Stage::new("OVMF HTTPv6 boot started", &["Start HTTP Boot over IPv6"]),
            Stage::new(
                "HTTPv6 boot DHCP done",
                &["Station IPv6 address is", "Station IP address is"],
            ),
            Stage::new("HTTP loader over IPv6", &["Downloading...100%"]),
        ];
        match self {
            Firmware::Bios => &BIOS,
            Firmware::UefiPxe | Firmware::UefiPxeSecureBoot => &UEFI_PXE,
            Firmware::UefiHttp | Firmware::UefiHttpSecureBoot => &UEFI_HTTP,
            Firmware::UefiPxe6 => &UEFI_PXE6,
            Firmware::UefiHttp6 => &UEFI_HTTP6,
            Firmware::Arm64UefiPxe | Firmware::Arm64UefiPxeSecureBoot => &AAVMF_PXE,
        }
    }

    /// The stages of a boot of this firmware through `chain`.
    pub fn stages_through(self, chain: Chain) -> Vec<Stage> {
        let mut stages = self.first_stages().to_vec();
        match chain.stages() {
            // iPXE over IPv6: its address from the router's prefix, its script from DHCPv6.
            [_dhcp, rest @ ..] if self.is_ipv6() && chain == Chain::Ipxe => {
                stages.push(Stage::new("iPXE IPv6 configured", &["net0: fd00:"]));
                stages.extend_from_slice(rest);
            }
            all => stages.extend_from_slice(all),
        }
        stages
    }

    /// The stages of a boot of this firmware through its [`Firmware::default_chain`].
    pub fn stages(self) -> Vec<Stage> {
        self.stages_through(self.default_chain())
    }
}

/// What runs after the firmware's own network boot: the loaders a node goes through to its
/// kernel (or to its disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    /// iPXE and xdpboot's per-node iPXE script.
    Ipxe,
    /// shim (signed by Microsoft), then GRUB (signed by Debian) with its per-node config; the
    /// kernel (signed by Debian) says Secure Boot held.
    ShimGrub,
    /// iPXE chains GRUB by URL; GRUB reads its per-node config.
    IpxeGrub,
    /// PXELINUX (lpxelinux.0) with its per-node config; kernel and initrds over HTTP.
    Pxelinux,
    /// xdpboot sends the machine to its own disk.
    LocalDisk,
}

impl Chain {
    pub fn name(self) -> &'static str {
        match self {
            Chain::Ipxe => "ipxe",
            Chain::ShimGrub => "shim-grub",
            Chain::IpxeGrub => "ipxe-grub",
            Chain::Pxelinux => "pxelinux",
            Chain::LocalDisk => "local-disk",
        }
    }

    /// The stages after the first-stage loader.
    pub fn stages(self) -> &'static [Stage] {
        const KERNEL: Stage = Stage::new("kernel started", &["Linux version"]);
        const INIT: Stage = Stage::new("/init running", &["xdpboot-initrd: /init running"]);
        const MARKER: Stage = Stage::new("marker", &[crate::assets::MARKER]);
        const GRUB: Stage = Stage::new("GRUB config", &[GRUB_CONFIG_READ]);
        const IPXE_DHCP: Stage = Stage::new("iPXE DHCP done", &["net0: 198."]);
        const IPXE: [Stage; 5] = [
            IPXE_DHCP,
            Stage::new("script fetched", &["xdpboot: booting"]),
            KERNEL,
            INIT,
            MARKER,
        ];
        const SHIM_GRUB: [Stage; 5] = [
            GRUB,
            KERNEL,
            Stage::new("Secure Boot enforced", &["secureboot: Secure boot enabled"]),
            INIT,
            MARKER,
        ];
        const IPXE_GRUB: [Stage; 5] = [IPXE_DHCP, GRUB, KERNEL, INIT, MARKER];
        const PXELINUX: [Stage; 5] = [
            Stage::new("PXELINUX", &["PXELINUX 6."]),
            Stage::new("PXELINUX config", &[PXELINUX_CONFIG_READ]),
            KERNEL,
            INIT,
            MARKER,
        ];
        // iPXE says what local.ipxe says; EDK2 answers the local-boot menu with PXE-E21.
        const LOCAL_DISK: [Stage; 2] = [
            Stage::new(
                "network boot left",
                &["xdpboot: booting from the local disk", "PXE-E21"],
            ),
            Stage::new("disk loader", &[LOCAL_DISK_MARKER]),
        ];
        match self {
            Chain::Ipxe => &IPXE,
            Chain::ShimGrub => &SHIM_GRUB,
            Chain::IpxeGrub => &IPXE_GRUB,
            Chain::Pxelinux => &PXELINUX,
            Chain::LocalDisk => &LOCAL_DISK,
        }
    }
}

/// Writes a raw disk image whose MBR boot code prints [`LOCAL_DISK_MARKER`] through the BIOS
/// (INT 10h teletype, which SeaBIOS copies to the serial console under `graphics=off`) and
/// halts: the disk a local-boot test's machine has second in its boot order.
pub fn write_bios_marker_disk(path: &Path) -> Result<()> {
    // Loaded at 0000:7C00 (the BIOS boot specification).
    const LOAD: u16 = 0x7c00;
    #[rustfmt::skip]
    let code: [u8; 26] = [
        // Interrupts stay on: SeaBIOS's serial console sends what INT 10h wrote from its
        // timer interrupt, so a halted CPU that took no interrupts would leave it unsent.
        0xfb,             // sti
        0x31, 0xc0,       // xor ax, ax
        0x8e, 0xd8,       // mov ds, ax
        0xbe, 0, 0,       // mov si, <message>        (patched below)
        0xfc,             // cld
        0xac,             // next: lodsb
        0x84, 0xc0,       // test al, al
        0x74, 0x09,       // jz done
        0xb4, 0x0e,       // mov ah, 0Eh             (teletype output)
        0xbb, 0x07, 0x00, // mov bx, 0007h           (page 0, colour 7)
        0xcd, 0x10,       // int 10h
        0xeb, 0xf2,       // jmp next
        0xf4,             // done: hlt
        0xeb, 0xfd,       // jmp done
    ];
    let mut sector = [0u8; 512];
    sector[..code.len()].copy_from_slice(&code);
    let message = format!("\r\n{LOCAL_DISK_MARKER}: the local disk's boot code runs\r\n\0");
    let at = code.len();
    sector[at..at + message.len()].copy_from_slice(message.as_bytes());
    let address = LOAD + u16::try_from(at).expect("the code is shorter than a sector");
    sector[6..8].copy_from_slice(&address.to_le_bytes());
    // The boot signature.
    sector[510] = 0x55;
    sector[511] = 0xaa;
    // One MiB, so it looks like a disk to every firmware.
    let mut image = vec![0u8; 1 << 20];
    image[..512].copy_from_slice(&sector);
    std::fs::write(path, image).with_context(|| format!("writing {}", path.display()))
}

/// Writes a raw disk image holding one FAT file system (no partition table: EDK2 mounts such
/// a disk whole) with `\EFI\BOOT\BOOTX64.EFI`, the removable-media loader UEFI boots from a
/// disk without boot variables (UEFI 2.10 §3.5.1.1). The loader prints
/// [`LOCAL_DISK_MARKER`] through the firmware's console (which OVMF copies to the serial
/// port) and halts. Needs mtools.
pub fn write_efi_marker_disk(path: &Path) -> Result<()> {
    let loader = path.with_extension("efi");
    std::fs::write(&loader, efi_marker_application())
        .with_context(|| format!("writing {}", loader.display()))?;
    std::fs::write(path, vec![0u8; 4 << 20])
        .with_context(|| format!("writing {}", path.display()))?;
    let image = path.display().to_string();
    let run = |tool: &str, args: &[&str]| -> Result<()> {
        crate::run_command(
            std::process::Command::new(tool).args(args),
            Duration::from_secs(10),
        )
        .with_context(|| format!("{tool} (install mtools: cargo xtask setup)"))?;
        Ok(())
    };
    run("mformat", &["-i", &image, "::"])?;
    run("mmd", &["-i", &image, "::/EFI", "::/EFI/BOOT"])?;
    run(
        "mcopy",
        &[
            "-i",
            &image,
            &loader.display().to_string(),
            "::/EFI/BOOT/BOOTX64.EFI",
        ],
    )?;
    Ok(())
}

/// A minimal x86-64 UEFI application (PE32+, subsystem 10) that calls
/// `SystemTable->ConOut->OutputString` with the marker line and then halts for good. Its code
/// uses only RIP-relative addresses, and its relocation directory holds one empty block, so
/// the firmware may load it anywhere (EDK2 `PeCoffLoaderRelocateImage`).
fn efi_marker_application() -> Vec<u8> {
    const FILE_ALIGNMENT: u32 = 0x200;
    const TEXT_RVA: u32 = 0x1000;
    const MESSAGE_OFFSET: u32 = 0x20;
    const RELOC_OFFSET: u32 = 0x100;
    // UEFI's x64 calling convention: RCX = image handle, RDX = system table on entry.
    #[rustfmt::skip]
    let code: [u8; 21] = [
        0x48, 0x83, 0xec, 0x28,  // sub rsp, 28h: shadow space, stack 16-byte aligned
        0x48, 0x8b, 0x4a, 0x40,  // mov rcx, [rdx+40h]: SystemTable->ConOut
        0x48, 0x8d, 0x15, 0x11, 0x00, 0x00, 0x00, // lea rdx, [rip+11h]: the message
        0xff, 0x51, 0x08,        // call [rcx+8]: ConOut->OutputString(ConOut, message)
        0xf4,                    // halt: hlt
        0xeb, 0xfd,              // jmp halt
    ];
    // `lea` ends at offset 15: 15 + 0x11 is the message.
    debug_assert_eq!(15 + 0x11, MESSAGE_OFFSET);
    let mut text = vec![0u8; FILE_ALIGNMENT as usize];
    text[..code.len()].copy_from_slice(&code);
    let message: Vec<u8> =
        format!("\r\n{LOCAL_DISK_MARKER}: the local disk's EFI loader runs\r\n\0")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
    let at = MESSAGE_OFFSET as usize;
    text[at..at + message.len()].copy_from_slice(&message);
    // A base relocation block with no entries: page RVA, block size 8.
    let at = RELOC_OFFSET as usize;
    text[at..at + 4].copy_from_slice(&TEXT_RVA.to_le_bytes());
    text[at + 4..at + 8].copy_from_slice(&8u32.to_le_bytes());

    let mut image = vec![0u8; FILE_ALIGNMENT as usize];
    let put = |image: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        image[at..at + bytes.len()].copy_from_slice(bytes);
    };
    // DOS header: "MZ", and where the PE header is.
    put(&mut image, 0, b"MZ");
    put(&mut image, 0x3c, &0x40u32.to_le_bytes());
    put(&mut image, 0x40, b"PE\0\0");
    // COFF header: x86-64, one section, a PE32+ optional header of 240 bytes, an executable
    // image (large-address aware).
    put(&mut image, 0x44, &0x8664u16.to_le_bytes());
    put(&mut image, 0x46, &1u16.to_le_bytes());
    put(&mut image, 0x54, &240u16.to_le_bytes());
    put(&mut image, 0x56, &0x0022u16.to_le_bytes());
    // Optional header (PE32+).
    let opt = 0x58;
    put(&mut image, opt, &0x020bu16.to_le_bytes());
    put(&mut image, opt + 4, &FILE_ALIGNMENT.to_le_bytes()); // SizeOfCode
    put(&mut image, opt + 16, &TEXT_RVA.to_le_bytes()); // AddressOfEntryPoint
    put(&mut image, opt + 20, &TEXT_RVA.to_le_bytes()); // BaseOfCode
    put(&mut image, opt + 24, &0x4000_0000u64.to_le_bytes()); // ImageBase
    put(&mut image, opt + 32, &0x1000u32.to_le_bytes()); // SectionAlignment
    put(&mut image, opt + 36, &FILE_ALIGNMENT.to_le_bytes()); // FileAlignment
    put(&mut image, opt + 56, &0x2000u32.to_le_bytes()); // SizeOfImage
    put(&mut image, opt + 60, &FILE_ALIGNMENT.to_le_bytes()); // SizeOfHeaders
    put(&mut image, opt + 68, &10u16.to_le_bytes()); // Subsystem: EFI application
    for (at, size) in [(72, 0x10000u64), (80, 0x1000), (88, 0x10000), (96, 0x1000)] {
        put(&mut image, opt + at, &size.to_le_bytes()); // stack and heap reserve/commit
    }
    put(&mut image, opt + 108, &16u32.to_le_bytes()); // NumberOfRvaAndSizes
    // Data directory 5: base relocations.
    put(
        &mut image,
        opt + 112 + 5 * 8,
        &(TEXT_RVA + RELOC_OFFSET).to_le_bytes(),
    );
    put(&mut image, opt + 112 + 5 * 8 + 4, &8u32.to_le_bytes());
    // Section header: .text, code and data, readable and executable.
    let section = opt + 240;
    put(&mut image, section, b".text\0\0\0");
    put(&mut image, section + 8, &FILE_ALIGNMENT.to_le_bytes()); // VirtualSize
    put(&mut image, section + 12, &TEXT_RVA.to_le_bytes()); // VirtualAddress
    put(&mut image, section + 16, &FILE_ALIGNMENT.to_le_bytes()); // SizeOfRawData
    put(&mut image, section + 20, &FILE_ALIGNMENT.to_le_bytes()); // PointerToRawData
    put(&mut image, section + 36, &0x6000_0060u32.to_le_bytes()); // code, data, read, execute
    image.extend_from_slice(&text);
    image
}

/// A step of a boot, recognised by text on the serial console.
#[derive(Debug, Clone, Copy)]
pub struct Stage {
    pub name: &'static str,
    pub patterns: &'static [&'static str],
}

impl Stage {
    const fn new(name: &'static str, patterns: &'static [&'static str]) -> Stage {
        Stage { name, patterns }
    }
}

/// What a VM is.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub mac: MacAddr,
    /// SMBIOS UUID.
    pub uuid: String,
    pub firmware: Firmware,
    /// The loaders after the firmware's network boot: which stages its console shows.
    pub chain: Chain,
    /// A disk, second in the boot order after the network (a raw image; the VM writes to a
    /// copy of its own).
    pub disk: Option<PathBuf>,
    /// For OVMF: the CA as an EFI signature list, given through fw_cfg
    /// `etc/edk2/https/cacerts` (OVMF's HTTPS boot trusts it, and so does Debian 13's iPXE,
    /// which reads the `TlsCaCertificate` variable OVMF makes of it).
    pub https_ca: Option<PathBuf>,
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// Also offer the serial console on this unix socket (`socat - UNIX-CONNECT:…`), for a
    /// node kept up with a shell (`cargo xtask run --keep`). The log file gets it all the same.
    pub console_socket: Option<PathBuf>,
    /// Directory with OVMF_CODE_4M.fd and OVMF_VARS_4M.fd: Debian 12's, or `$XDPBOOT_OVMF_DIR`.
    /// (Debian 13's OVMF, in `.cache/debian13/ovmf`, has no virtio-net driver of its own: with
    /// `romfile=` it finds no NIC, and with QEMU's NIC ROM it is iPXE that boots.)
    pub ovmf: PathBuf,
    /// Directory with AAVMF_CODE.fd and AAVMF_VARS.fd (arm64): Debian 12's, or
    /// `$XDPBOOT_AAVMF_DIR`.
    pub aavmf: PathBuf,
}

impl VmSpec {
    pub fn new(name: &str, mac: MacAddr, firmware: Firmware) -> VmSpec {
        VmSpec {
            name: name.to_owned(),
            mac,
            // The node field is the MAC's twelve hex digits.
            uuid: format!(
                "00112233-4455-6677-8899-{}",
                mac.to_string().replace(':', "")
            ),
            firmware,
            chain: firmware.default_chain(),
            disk: None,
            https_ca: None,
            memory_mb: 512,
            console_socket: None,
            ovmf: std::env::var_os("XDPBOOT_OVMF_DIR")
                .map_or_else(|| PathBuf::from(OVMF_DIR), PathBuf::from),
            aavmf: std::env::var_os("XDPBOOT_AAVMF_DIR")
                .map_or_else(|| PathBuf::from(AAVMF_DIR), PathBuf::from),
        }
    }
}

/// The accelerator QEMU should use: `tcg` unless `/dev/kvm` is a real (VMX/SVM) KVM. A PVM
/// KVM (module `kvm_pvm`), as on this project's machines, kills OVMF with "KVM internal
/// error" and makes the iPXE ROM fail emulation. `$XDPBOOT_QEMU_ACCEL` overrides.
pub fn accelerator() -> &'static str {
    if let Ok(accel) = std::env::var("XDPBOOT_QEMU_ACCEL") {
        return if accel == "kvm" { "kvm" } else { "tcg" };
    }
    let kvm_usable = Path::new("/dev/kvm").exists()
        && !Path::new("/sys/module/kvm_pvm").exists()
        && (Path::new("/sys/module/kvm_intel").exists()
            || Path::new("/sys/module/kvm_amd").exists());
    if kvm_usable { "kvm" } else { "tcg" }
}

/// Why the accelerator was chosen, for progress lines.
pub fn accelerator_reason() -> &'static str {
    if std::env::var_os("XDPBOOT_QEMU_ACCEL").is_some() {
        "set by XDPBOOT_QEMU_ACCEL"
    } else if Path::new("/sys/module/kvm_pvm").exists() {
        "the host's KVM is PVM (kvm_pvm), which OVMF and the iPXE ROM cannot run on"
    } else if accelerator() == "kvm" {
        "/dev/kvm is a VMX/SVM KVM"
    } else {
        "no usable /dev/kvm"
    }
}

/// A running VM; killed on drop (its [`ChildGuard`]).
#[derive(Debug)]
pub struct Vm {
    pub spec: VmSpec,
    pub serial: PathBuf,
    pub started: Instant,
    child: ChildGuard,
    /// The stages its console may show ([`Firmware::stages_through`] its chain).
    stages: Vec<Stage>,
    /// Stages seen so far, with the time since start.
    pub reached: Vec<(&'static str, Duration)>,
    /// How much of the serial log has been read into `lines`.
    read_upto: usize,
    partial: String,
    /// Console lines read so far (escape sequences removed).
    pub lines: Vec<String>,
}

impl Vm {
    /// Starts QEMU inside `rack` on the (existing) tap `tap`, logging in `dir`.
    pub fn start(rack: &NetNs, tap: &str, spec: VmSpec, dir: &Path) -> Result<Vm> {
        let serial = dir.join(format!("{}.serial.log", spec.name));
        let _ = std::fs::remove_file(&serial);
        let mac = spec.mac;
        let arch = spec.firmware.arch();
        let mut args: Vec<String> = vec![
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-accel".into(),
            match arch {
                Arch::X86_64 => accelerator().into(),
                // KVM runs guests of the host's architecture only.
                Arch::Arm64 => "tcg".into(),
            },
            "-smp".into(),
            "1".into(),
            "-m".into(),
            spec.memory_mb.to_string(),
            "-uuid".into(),
            spec.uuid.clone(),
            "-netdev".into(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ];
        match &spec.console_socket {
            Some(socket) => args.extend([
                "-chardev".into(),
                format!(
                    "socket,id=console,path={},server=on,wait=off,logfile={}",
                    socket.display(),
                    serial.display()
                ),
                "-serial".into(),
                "chardev:console".into(),
            ]),
            None => args.extend(["-serial".into(), format!("file:{}", serial.display())]),
        }
        match spec.firmware {
            Firmware::Bios => {
                args.extend(["-M".into(), "pc,graphics=off".into()]);
                args.extend([
                    "-device".into(),
                    format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=1"),
                ]);
            }
            Firmware::UefiPxe
            | Firmware::UefiHttp
            | Firmware::UefiPxe6
            | Firmware::UefiHttp6
            | Firmware::UefiPxeSecureBoot
            | Firmware::UefiHttpSecureBoot => {
                let secure_boot = spec.firmware.secure_boot();
                let vars = dir.join(format!("{}.vars.fd", spec.name));
                let (code, vars_template) = if secure_boot {
                    (OVMF_CODE_SECURE_BOOT, OVMF_VARS_SECURE_BOOT)
                } else {
                    (OVMF_CODE, OVMF_VARS)
                };
                let (code, vars_template) = (spec.ovmf.join(code), spec.ovmf.join(vars_template));
                std::fs::copy(&vars_template, &vars)
                    .with_context(|| format!("copying {}", vars_template.display()))?;
                if secure_boot {
                    // The Secure Boot build keeps its variables in SMM, behind a flash that
                    // only SMM may write (DESIGN.md, "Verified later").
                    args.extend([
                        "-M".into(),
                        "q35,smm=on".into(),
                        "-global".into(),
                        "driver=cfi.pflash01,property=secure,value=on".into(),
                    ]);
                } else {
                    args.extend(["-M".into(), "q35".into()]);
                }
                args.extend([
                    "-drive".into(),
                    format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        code.display()
                    ),
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                    // romfile= : no iPXE ROM, so EDK2's own network stack boots.
                    "-device".into(),
                    if std::env::var_os("XDPBOOT_NIC_ROM").is_some() {
                        format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=1")
                    } else {
                        format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1")
                    },
                ]);
                // EDK2 tries PXEv4, PXEv6, HTTPv4, HTTPv6 in that order; a try that finds no
                // server costs about a minute. Off: PXE over the other IP version, and PXE
                // altogether for HTTP boot.
                let ipv4_pxe = matches!(
                    spec.firmware,
                    Firmware::UefiPxe | Firmware::UefiPxeSecureBoot
                );
                let ipv6_pxe = spec.firmware == Firmware::UefiPxe6;
                for (knob, on) in [("IPv4PXESupport", ipv4_pxe), ("IPv6PXESupport", ipv6_pxe)] {
                    if !on {
                        args.extend([
                            "-fw_cfg".into(),
                            format!("name=opt/org.tianocore/{knob},string=n"),
                        ]);
                    }
                }
                if spec.disk.is_some() && !spec.firmware.is_ipv6() {
                    // OVMF puts HTTP boot options of the same NIC beside PXE, ahead of the
                    // disk. Over IPv6 (no DHCPv6 in an IPv4 lab) it would wait out its timeout
                    // before the disk: off, as on a server set up to boot PXE, then its disk
                    // (OvmfPkg RUNTIME_CONFIG.md). HTTP boot over IPv4 stays, and is answered.
                    args.extend([
                        "-fw_cfg".into(),
                        "name=opt/org.tianocore/IPv6Support,string=n".into(),
                    ]);
                }
                if let Some(ca) = &spec.https_ca {
                    args.extend([
                        "-fw_cfg".into(),
                        format!("name=etc/edk2/https/cacerts,file={}", ca.display()),
                    ]);
                }
            }
            Firmware::Arm64UefiPxe | Firmware::Arm64UefiPxeSecureBoot => {
                let vars = dir.join(format!("{}.vars.fd", spec.name));
                let vars_file = if spec.firmware == Firmware::Arm64UefiPxeSecureBoot {
                    AAVMF_VARS_MS
                } else {
                    AAVMF_VARS
                };
                let (code, vars_template) =
                    (spec.aavmf.join(AAVMF_CODE), spec.aavmf.join(vars_file));
                std::fs::copy(&vars_template, &vars).with_context(|| {
                    format!(
                        "copying {} (install qemu-efi-aarch64: cargo xtask setup)",
                        vars_template.display()
                    )
                })?;
                args.extend([
                    "-M".into(),
                    "virt".into(),
                    // pauth-impdef: QEMU's cheap pointer-authentication algorithm instead of
                    // QARMA, which costs TCG much of its speed (QEMU docs, "Arm CPU features").
                    "-cpu".into(),
                    "max,pauth-impdef=on".into(),
                    "-drive".into(),
                    format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        code.display()
                    ),
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                    // romfile= : no option ROM, so EDK2's own network stack boots.
                    "-device".into(),
                    format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,bootindex=1"),
                    "-fw_cfg".into(),
                    "name=opt/org.tianocore/IPv6PXESupport,string=n".into(),
                ]);
            }
        }
        if let Some(disk) = &spec.disk {
            // Second in the boot order (SeaBIOS and EDK2 both follow QEMU's bootindex); the
            // image itself is never written (snapshot).
            args.extend([
                "-drive".into(),
                format!(
                    "file={},if=none,id=disk0,format=raw,snapshot=on",
                    disk.display()
                ),
                "-device".into(),
                "virtio-blk-pci,drive=disk0,bootindex=2".into(),
            ]);
        }
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let child = rack.spawn(
            &format!("qemu {}", spec.name),
            Path::new(arch.qemu()),
            &args,
            &[],
            dir.join(format!("{}.qemu.log", spec.name)),
        )?;
        Ok(Vm {
            stages: spec.firmware.stages_through(spec.chain),
            spec,
            serial,
            started: Instant::now(),
            child,
            reached: Vec::new(),
            read_upto: 0,
            partial: String::new(),
            lines: Vec::new(),
        })
    }

    /// Reads what the console printed since the last call; returns the new complete lines
    /// and records the stages they reach.
    pub fn poll(&mut self) -> Vec<String> {
        let Ok(bytes) = std::fs::read(&self.serial) else {
            return Vec::new();
        };
        if bytes.len() <= self.read_upto {
            return Vec::new();
        }
        let text = String::from_utf8_lossy(&bytes[self.read_upto..]).into_owned();
        self.read_upto = bytes.len();
        self.partial.push_str(&text);
        let mut new = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let raw: String = self.partial.drain(..=end).collect();
            // iPXE and OVMF redraw progress with \r; keep what the line finally says.
            let line = clean(
                raw.rsplit('\r')
                    .find(|s| !s.trim().is_empty())
                    .unwrap_or(""),
            );
            self.note(&line);
            new.push(line);
        }
        // A line still being written counts too: OVMF ends ">>Start PXE over IPv4." only once
        // its DHCP is done, and prints download progress without a newline.
        let pending = clean(&self.partial);
        self.note(&pending);
        self.lines.extend(new.iter().cloned());
        new
    }

    fn note(&mut self, line: &str) {
        let elapsed = self.started.elapsed();
        for stage in &self.stages {
            if !self.reached.iter().any(|(name, _)| *name == stage.name)
                && stage.patterns.iter().any(|p| line.contains(p))
            {
                self.reached.push((stage.name, elapsed));
            }
        }
    }

    /// Whether `stage` was reached, and when.
    pub fn reached(&self, stage: &str) -> Option<Duration> {
        self.reached
            .iter()
            .find(|(n, _)| *n == stage)
            .map(|(_, t)| *t)
    }

    /// The marker line, once printed.
    pub fn marker(&self) -> Option<Marker> {
        self.lines.iter().find_map(|l| Marker::parse(l))
    }

    /// Whether QEMU has exited (the guest powered off, or it failed).
    pub fn exited(&mut self) -> bool {
        self.child.check_running().is_err()
    }

    /// Polls until `done` holds for a console line (new or old), QEMU exits, or `timeout`
    /// passes; returns the matching line.
    pub fn wait_for_line(
        &mut self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut checked = 0;
        loop {
            self.poll();
            if let Some(line) = self.lines[checked..].iter().find(|l| done(l)) {
                return Ok(line.clone());
            }
            checked = self.lines.len();
            if self.exited() {
                self.poll();
                if let Some(line) = self.lines.iter().find(|l| done(l)) {
                    return Ok(line.clone());
                }
                bail!(
                    "{}: QEMU exited before {what}; console:\n{}",
                    self.spec.name,
                    self.console_tail(60)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{}: no {what} within {timeout:?} (stages reached: {:?}); console:\n{}",
                    self.spec.name,
                    self.reached,
                    self.console_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the marker line (see [`crate::assets::MARKER`]). Fails as soon as the boot
    /// cannot succeed any more: the initrd found no overlay, or xdpboot's default script gave
    /// up its download attempts.
    pub fn wait_for_marker(&mut self, timeout: Duration) -> Result<Marker> {
        let line = self.wait_for_line("boot marker", timeout, |l| {
            l.contains(crate::assets::MARKER)
                || l.contains(crate::assets::NO_OVERLAY)
                || l.contains(SCRIPT_GAVE_UP)
        })?;
        Marker::parse(&line).with_context(|| {
            format!(
                "{}: no marker: {line}\nconsole:\n{}",
                self.spec.name,
                self.console_tail(40)
            )
        })
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        let start = self.lines.len().saturating_sub(n);
        let mut text = self.lines[start..].join("\n");
        if !self.partial.trim().is_empty() {
            text.push('\n');
            text.push_str(&clean(&self.partial));
        }
        text
    }
}

/// What /init printed: `XDPBOOT-MARKER node=<hostname> mac=<mac> token=<token>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub node: String,
    pub mac: String,
    pub token: String,
}

impl Marker {
    pub fn parse(line: &str) -> Option<Marker> {
        let rest = &line[line.find(crate::assets::MARKER)? + crate::assets::MARKER.len()..];
        let field = |key: &str| {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_default()
                .to_owned()
        };
        Some(Marker {
            node: field("node"),
            mac: field("mac"),
            token: field("token"),
        })
    }
}

/// A console line without terminal escape sequences and control characters.
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte; other escapes: ESC and one character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out.trim_end().to_owned()
}
