#!/usr/bin/env bash
# Capture real DHCP/BOOTP request packets sent by real firmware running in QEMU
# and store them as golden test data (one raw BOOTP message per .bin file,
# starting at the op byte, i.e. the UDP payload).
#
# Usage: sudo tests/data/capture.sh [OUTDIR] [SCENARIO...]
#   OUTDIR    defaults to the directory of this script
#   SCENARIO  any of: bios-menu bios uefi-pxe uefi-http (default: all four)
#   KEEP=1    keep the temporary work dir (serial logs, dnsmasq logs, pcaps)
#
# Needs root, qemu-system-x86, ovmf, ipxe-qemu, ipxe, dnsmasq(-base), tcpdump,
# python3. Everything runs inside network namespaces this script creates, on
# 198.18.0.0/24 only; QEMU gets only a tap NIC (-nodefaults). KVM is not used
# (-accel tcg).
#
# Lab layout (names carry a random suffix):
#   ns xdpcap-r-SUF ("rack"):  bridge br0, one tap per VM, capture point
#   ns xdpcap-s-SUF (proxy):   s0 198.18.0.1/24: a TFTP-only dnsmasq, a python
#                              http.server on :80, and per scenario either dnsmasq
#                              (proxyDHCP on 67 + 4011) or a minimal python
#                              proxy (bare proxy OFFER without boot file/menu, so
#                              that iPXE sends its ProxyDHCPREQUEST to 4011; and
#                              HTTPClient proxy OFFERs carrying a URL)
#   ns xdpcap-a-SUF (site):    a0 198.18.0.2/24, dnsmasq address server only
#                              (198.18.0.100-200), like a site DHCP server
#
# Scenarios:
#   bios-menu  SeaBIOS + iPXE ROM vs dnsmasq proxy. dnsmasq's BIOS proxy offer
#              carries a PXE boot menu (opt 43 sub 9/10), so iPXE skips the
#              ProxyDHCPREQUEST and sends a PXE boot-server request (opt 43
#              sub 71) to 4011 instead -> seabios-ipxe-pxebs-4011.bin
#   bios       SeaBIOS + iPXE ROM vs the bare python proxy -> the real
#              ProxyDHCPREQUEST to 4011 (seabios-ipxe-request-4011.bin)
#   uefi-pxe   OVMF PXE vs dnsmasq proxy (UEFI offer has no opt 43/no file, so
#              OVMF asks 4011), TFTP of Debian's ipxe.efi, which does DHCP again
#   uefi-http  OVMF HTTP boot vs the python proxy (HTTPClient proxy offer with URL)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=${1:-$HERE}
shift || true
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(bios-menu bios uefi-pxe uefi-http)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

[ "$(id -u)" = 0 ] || { echo "capture.sh: must run as root" >&2; exit 1; }
for b in qemu-system-x86_64 dnsmasq tcpdump python3 ip timeout; do
    command -v "$b" >/dev/null || { echo "capture.sh: missing $b" >&2; exit 1; }
done
OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
IPXE_EFI=/usr/lib/ipxe/ipxe.efi
UNDIONLY=/usr/lib/ipxe/undionly.kpxe
for f in "$OVMF_CODE" "$OVMF_VARS" "$IPXE_EFI" "$UNDIONLY"; do
    [ -r "$f" ] || { echo "capture.sh: missing $f" >&2; exit 1; }
done

SUF=$(printf '%04x%04x' $$ $RANDOM)
NS_R=xdpcap-r-$SUF
NS_S=xdpcap-s-$SUF
NS_A=xdpcap-a-$SUF
WORK=$(mktemp -d /tmp/xdpcap.XXXXXX)
PIDS=()

cleanup() {
    local rc=$?
    set +e
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    sleep 0.5
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    # anything still running inside our namespaces (only processes we started)
    for ns in "$NS_R" "$NS_S" "$NS_A"; do
        if ip netns pids "$ns" >/dev/null 2>&1; then
            for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null; done
        fi
    done
    for ns in "$NS_R" "$NS_S" "$NS_A"; do
        ip netns del "$ns" 2>/dev/null
    done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "capture.sh: work dir kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "capture.sh: $*" >&2; }

# ---------------------------------------------------------------- pcap helper
cat >"$WORK/pcapx.py" <<'PY'
import struct, sys

def packets(path):
    """Yield (ts, src_mac, ip_src, ip_dst, sport, dport, payload) for IPv4/UDP."""
    data = open(path, 'rb').read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b'\xd4\xc3\xb2\xa1', b'\x4d\x3c\xb2\xa1'):
        e = '<'
    elif magic in (b'\xa1\xb2\xc3\xd4', b'\xa1\xb2\x3c\x4d'):
        e = '>'
    else:
        raise SystemExit('not a classic pcap file: %s' % path)
    linktype = struct.unpack(e + 'I', data[20:24])[0]
    if linktype != 1:
        raise SystemExit('unsupported linktype %d' % linktype)
    off = 24
    while off + 16 <= len(data):
        ts, tsu, incl, _orig = struct.unpack(e + 'IIII', data[off:off + 16])
        off += 16
        frame = data[off:off + incl]
        off += incl
        if len(frame) < incl:
            break
        src_mac = frame[6:12]
        et = struct.unpack('>H', frame[12:14])[0]
        p = 14
        while et in (0x8100, 0x88a8) and len(frame) >= p + 4:
            et = struct.unpack('>H', frame[p + 2:p + 4])[0]
            p += 4
        if et != 0x0800 or len(frame) < p + 20:
            continue
        ihl = (frame[p] & 0x0f) * 4
        if frame[p + 9] != 17:
            continue
        ip_src = '.'.join(str(b) for b in frame[p + 12:p + 16])
        ip_dst = '.'.join(str(b) for b in frame[p + 16:p + 20])
        u = p + ihl
        sport, dport, ulen = struct.unpack('>HHH', frame[u:u + 6])
        payload = frame[u + 8:u + ulen]
        yield ts + tsu / 1e6, src_mac, ip_src, ip_dst, sport, dport, payload

def options(msg):
    """Return list of (code, value) in order; handles pad/end."""
    out = []
    if len(msg) < 240 or msg[236:240] != b'\x63\x82\x53\x63':
        return None
    i = 240
    while i < len(msg):
        c = msg[i]
        if c == 0:
            i += 1
            continue
        if c == 255:
            break
        if i + 1 >= len(msg):
            break
        l = msg[i + 1]
        out.append((c, msg[i + 2:i + 2 + l]))
        i += 2 + l
    return out

def opt(msg, code):
    for c, v in options(msg) or []:
        if c == code:
            return v
    return None

MSGTYPES = {1: 'DISCOVER', 2: 'OFFER', 3: 'REQUEST', 4: 'DECLINE', 5: 'ACK',
            6: 'NAK', 7: 'RELEASE', 8: 'INFORM'}

def client_msgs(path, mac):
    mac = bytes.fromhex(mac.replace(':', ''))
    for ts, src, ips, ipd, sp, dp, pl in packets(path):
        if src != mac or len(pl) < 240 or pl[0] != 1:
            continue
        if options(pl) is None:
            continue
        t = opt(pl, 53)
        yield ts, ips, ipd, sp, dp, pl, (t[0] if t else None)

def is_ipxe(pl):
    uc = opt(pl, 77)
    return uc is not None and b'iPXE' in uc

def vendor(pl):
    v = opt(pl, 60)
    return v.decode('latin1') if v else ''

# wanted: name -> predicate(ts, ips, ipd, sp, dp, pl, typ)
def wanted(scenario):
    if scenario == 'bios-menu':
        return {
            'seabios-ipxe-pxebs-4011': lambda m: m[7] == 0 and m[6] == 3 and m[4] == 4011,
        }
    if scenario == 'bios':
        return {
            'seabios-ipxe-discover': lambda m: m[7] == 0 and m[6] == 1 and m[4] == 67,
            'seabios-ipxe-request-67': lambda m: m[7] == 0 and m[6] == 3 and m[4] == 67,
            'seabios-ipxe-request-4011': lambda m: m[7] == 0 and m[6] == 3 and m[4] == 4011,
            # Debian's undionly.kpxe, TFTP-loaded by the ROM, doing its own DHCP
            'undionly-kpxe-discover': lambda m: m[7] == 1 and m[6] == 1 and m[4] == 67,
            'undionly-kpxe-request-67': lambda m: m[7] == 1 and m[6] == 3 and m[4] == 67,
            'undionly-kpxe-request-4011': lambda m: m[7] == 1 and m[6] == 3 and m[4] == 4011,
        }
    if scenario == 'uefi-pxe':
        return {
            'ovmf-pxe-discover': lambda m: m[6] == 1 and m[4] == 67 and not is_ipxe(m[5]),
            'ovmf-pxe-request-67': lambda m: m[6] == 3 and m[4] == 67 and not is_ipxe(m[5]),
            'ovmf-pxe-request-4011': lambda m: m[6] == 3 and m[4] == 4011 and not is_ipxe(m[5]),
            'ipxe-efi-discover': lambda m: m[6] == 1 and m[4] == 67 and is_ipxe(m[5]),
            'ipxe-efi-request-67': lambda m: m[6] == 3 and m[4] == 67 and is_ipxe(m[5]),
            'ipxe-efi-request-4011': lambda m: m[6] == 3 and m[4] == 4011 and is_ipxe(m[5]),
        }
    if scenario == 'uefi-http':
        return {
            'ovmf-http-discover': lambda m: m[6] == 1 and m[4] == 67 and vendor(m[5]).startswith('HTTPClient'),
            'ovmf-http-request-67': lambda m: m[6] == 3 and m[4] == 67 and vendor(m[5]).startswith('HTTPClient'),
            'ovmf-http-request-4011': lambda m: m[6] == 3 and m[4] == 4011,
        }
    raise SystemExit('unknown scenario ' + scenario)

def find(scenario, path, mac):
    """First message matching each wanted predicate. Predicates see the
    message tuple plus a stage number: stage n+1 starts with the first
    DISCOVER after a 4011 REQUEST of stage n (the next loader's own DHCP)."""
    w = wanted(scenario)
    found = {}
    stage, seen4011 = 0, False
    for m in client_msgs(path, mac):
        if m[6] == 1 and seen4011:
            stage, seen4011 = stage + 1, False
        if m[6] == 3 and m[4] == 4011:
            seen4011 = True
        for name, pred in w.items():
            if name not in found and pred(m + (stage,)):
                found[name] = m
    return w, found

def main():
    cmd = sys.argv[1]
    if cmd == 'check':          # check SCENARIO PCAP MAC NAME...  -> rc 0 if all NAMEs found
        _, found = find(sys.argv[2], sys.argv[3], sys.argv[4])
        sys.exit(0 if all(n in found for n in sys.argv[5:]) else 1)
    if cmd == 'extract':        # extract SCENARIO PCAP MAC OUTDIR
        w, found = find(sys.argv[2], sys.argv[3], sys.argv[4])
        for name in w:
            if name in found:
                ts, ips, ipd, sp, dp, pl, typ = found[name]
                with open('%s/%s.bin' % (sys.argv[5], name), 'wb') as f:
                    f.write(pl)
                print('%-28s %4d bytes  %s:%d -> %s:%d' % (name + '.bin', len(pl), ips, sp, ipd, dp))
            else:
                print('%-28s not seen' % (name + '.bin'))
        return
    if cmd == 'list':           # list PCAP : every BOOTP message, both directions
        t0 = None
        for ts, src, ips, ipd, sp, dp, pl in packets(sys.argv[2]):
            t0 = t0 if t0 is not None else ts
            if len(pl) < 240:
                continue
            t = opt(pl, 53)
            print('%8.3f %s %s:%d -> %s:%d op=%d %s len=%d vc=%r uc=%r' % (
                ts - t0, src.hex(':'), ips, sp, ipd, dp, pl[0],
                MSGTYPES.get(t[0] if t else 0, 'BOOTP'), len(pl), vendor(pl),
                opt(pl, 77)))
        return
    raise SystemExit('usage')

main()
PY
PCAPX() { python3 "$WORK/pcapx.py" "$@"; }

# ------------------------------------------------- minimal python proxyDHCP
# A deliberately small proxy: only what is needed to make the firmware go on.
#  - PXEClient DISCOVER on 67 -> proxy OFFER: yiaddr 0, siaddr 0, no file, no
#    opt 43, opts 53/54/60 "PXEClient"/97 echoed. (iPXE sends its
#    ProxyDHCPREQUEST to 4011 only when the proxy offer has neither
#    siaddr+file nor a PXE boot menu.)
#  - REQUEST on 4011 -> ACK with siaddr + file (so iPXE accepts it).
#  - HTTPClient DISCOVER on 67 -> proxy OFFER: yiaddr 0, opt 60 "HTTPClient",
#    file = URL (EDK2 "proxy offer with IP URI").
#  - anything else: logged, not answered.
cat >"$WORK/pyproxy.py" <<'PY'
import select, socket, struct, sys, time

ME, IFACE, BOOTFILE, URL, LOG = sys.argv[1:6]
me = socket.inet_aton(ME)
log = open(LOG, 'a', buffering=1)

def sock(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IFACE.encode())
    s.bind(('0.0.0.0', port))
    return s

def opts(m):
    out, i = {}, 240
    while i < len(m) and m[i] != 255:
        if m[i] == 0:
            i += 1
            continue
        out.setdefault(m[i], m[i + 2:i + 2 + m[i + 1]])
        i += 2 + m[i + 1]
    return out

def reply(req, typ, vc, siaddr=b'\0' * 4, file=b''):
    o = opts(req)
    hdr = bytearray(req[:236])
    hdr[0] = 2                      # op BOOTREPLY
    hdr[3] = 0                      # hops
    hdr[8:10] = b'\0\0'             # secs
    hdr[16:20] = b'\0' * 4          # yiaddr: proxy never gives an address
    hdr[20:24] = siaddr
    hdr[44:108] = b'\0' * 64        # sname
    hdr[108:236] = file.ljust(128, b'\0')[:128]
    out = bytes(hdr) + b'\x63\x82\x53\x63'
    out += bytes([53, 1, typ]) + bytes([54, 4]) + me
    out += bytes([60, len(vc)]) + vc
    if 97 in o:
        out += bytes([97, len(o[97])]) + o[97]
    out += b'\xff'
    return out.ljust(300, b'\0')

s67, s4011 = sock(67), sock(4011)
while True:
    r, _, _ = select.select([s67, s4011], [], [])
    for s in r:
        m, (src, sport) = s.recvfrom(2048)
        port = s.getsockname()[1]
        if len(m) < 240 or m[0] != 1 or m[236:240] != b'\x63\x82\x53\x63':
            continue
        o = opts(m)
        typ = o.get(53, b'\0')[0]
        vc = o.get(60, b'')
        log.write('%.3f rx port %d from %s:%d type %d vc %r mac %s\n' % (
            time.time(), port, src, sport, typ, vc, m[28:34].hex(':')))
        if port == 67 and typ == 1 and vc.startswith(b'PXEClient'):
            s.sendto(reply(m, 2, b'PXEClient'), ('255.255.255.255', 68))
            log.write('  -> bare PXEClient proxy OFFER\n')
        elif port == 67 and typ == 1 and vc.startswith(b'HTTPClient'):
            s.sendto(reply(m, 2, b'HTTPClient', me, URL.encode()), ('255.255.255.255', 68))
            log.write('  -> HTTPClient proxy OFFER with %s\n' % URL)
        elif port == 4011 and typ == 3:
            s.sendto(reply(m, 5, vc[:10] if vc.startswith(b'HTTPClient') else b'PXEClient',
                           me, BOOTFILE.encode()), (src, sport))
            log.write('  -> ACK to %s:%d file %s\n' % (src, sport, BOOTFILE))
PY

# ---------------------------------------------------------------- lab network
log "namespaces $NS_R $NS_S $NS_A, work dir $WORK"
ip netns add "$NS_R"
ip netns add "$NS_S"
ip netns add "$NS_A"
for ns in "$NS_R" "$NS_S" "$NS_A"; do
    ip -n "$ns" link set lo up
    # no IPv6 noise on the wire (and no IPv6 autoconf on our side)
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
done
ip -n "$NS_R" link add br0 type bridge stp_state 0 forward_delay 0
ip -n "$NS_R" link set br0 up
# veths are created inside the rack namespace: nothing ever appears in the host's
ip -n "$NS_R" link add vs type veth peer name s0 netns "$NS_S"
ip -n "$NS_R" link add va type veth peer name a0 netns "$NS_A"
ip -n "$NS_R" link set vs master br0 up
ip -n "$NS_R" link set va master br0 up
ip -n "$NS_S" addr add 198.18.0.1/24 dev s0
ip -n "$NS_S" link set s0 up
ip -n "$NS_A" addr add 198.18.0.2/24 dev a0
ip -n "$NS_A" link set a0 up

# ---------------------------------------------------------------- DHCP servers
mkdir -p "$WORK/tftp" "$WORK/www"
cp "$UNDIONLY" "$WORK/tftp/undionly.kpxe"
cp "$IPXE_EFI" "$WORK/tftp/ipxe.efi"
chmod -R a+rX "$WORK"

DNSMASQ_COMMON=(--keep-in-foreground --conf-file=/dev/null --port=0 --bind-interfaces
    --except-interface=lo --log-dhcp --no-ping --user=root --group=root)

# site DHCP server: addresses only, runs for the whole capture
ip netns exec "$NS_A" dnsmasq "${DNSMASQ_COMMON[@]}" --interface=a0 \
    --pid-file="$WORK/site.pid" --dhcp-leasefile="$WORK/site.leases" \
    --log-facility="$WORK/site.log" \
    --dhcp-range=198.18.0.100,198.18.0.200,255.255.255.0,2m &
PIDS+=($!)
SITE_PID=$!

# TFTP for the first stage, for whichever proxy runs (TFTP only: no DHCP, no DNS)
ip netns exec "$NS_S" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
    --bind-interfaces --interface=s0 --except-interface=lo --user=root --group=root \
    --pid-file="$WORK/tftp.pid" --log-facility="$WORK/tftp.log" \
    --enable-tftp --tftp-root="$WORK/tftp" &
PIDS+=($!)

# a plain HTTP server on the proxy side, only to see whether OVMF HTTP boot
# follows the URL from the proxy offer (it answers 404)
ip netns exec "$NS_S" python3 -m http.server --bind 198.18.0.1 --directory "$WORK/www" 80 \
    >"$WORK/http.log" 2>&1 &
PIDS+=($!)
sleep 1
kill -0 "$SITE_PID" 2>/dev/null || { log "site dnsmasq failed to start"; cat "$WORK/site.log" >&2; exit 1; }

PROXY_PID=
# start_proxy dnsmasq|python LOGNAME
start_proxy() {
    if [ "$1" = dnsmasq ]; then
        # proxyDHCP: boot info only, port 67 and 4011
        ip netns exec "$NS_S" dnsmasq "${DNSMASQ_COMMON[@]}" --interface=s0 \
            --pid-file="$WORK/$2.pid" --dhcp-leasefile="$WORK/$2.leases" \
            --log-facility="$WORK/$2.log" \
            --dhcp-range=198.18.0.0,proxy,255.255.255.0 \
            --pxe-service=x86PC,boot,undionly.kpxe \
            --pxe-service=x86-64_EFI,boot,ipxe.efi &
    else
        ip netns exec "$NS_S" python3 "$WORK/pyproxy.py" 198.18.0.1 s0 undionly.kpxe \
            http://198.18.0.1/boot.efi "$WORK/$2.log" 2>>"$WORK/$2.log" &
    fi
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    sleep 1
    kill -0 "$PROXY_PID" 2>/dev/null || { log "proxy $1 failed to start"; cat "$WORK/$2.log" >&2; exit 1; }
}
stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=
}

# ---------------------------------------------------------------- one VM run
# run_vm NAME MAC TIMEOUT GRACE "NEEDED NAMES" -- qemu args...
# Captures on the rack bridge while the VM boots; stops as soon as all NEEDED
# messages are in the pcap (then waits GRACE seconds more), or at TIMEOUT.
run_vm() {
    local name=$1 mac=$2 tmo=$3 grace=$4 needed=$5
    shift 6
    local tap=tap-$name
    tap=${tap:0:15}
    local pcap=$WORK/$name.pcap
    ip -n "$NS_R" tuntap add dev "$tap" mode tap
    ip -n "$NS_R" link set "$tap" master br0 up

    ip netns exec "$NS_R" tcpdump -Z root -i br0 -U -n -s 0 -w "$pcap" \
        'udp port 67 or udp port 68 or udp port 4011' 2>"$WORK/$name.tcpdump.log" &
    local tcpd=$!
    PIDS+=("$tcpd")
    sleep 1

    log "[$name] booting (timeout ${tmo}s), waiting for: $needed"
    local start=$SECONDS
    ip netns exec "$NS_R" timeout --kill-after=5 "$tmo" qemu-system-x86_64 \
        -nodefaults -display none -no-reboot -accel tcg \
        -serial "file:$WORK/$name.serial.log" \
        -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
        "$@" >"$WORK/$name.qemu.log" 2>&1 &
    local qemu=$!
    PIDS+=("$qemu")

    local ok=0
    while kill -0 "$qemu" 2>/dev/null; do
        sleep 2
        # shellcheck disable=SC2086
        if [ -s "$pcap" ] && PCAPX check "$name" "$pcap" "$mac" $needed; then
            ok=1
            log "[$name] got everything after $((SECONDS - start))s"
            sleep "$grace"
            break
        fi
    done
    kill "$qemu" 2>/dev/null || true
    wait "$qemu" 2>/dev/null || true
    sleep 1
    kill "$tcpd" 2>/dev/null || true
    wait "$tcpd" 2>/dev/null || true
    ip -n "$NS_R" link del "$tap" 2>/dev/null || true
    [ "$ok" = 1 ] || log "[$name] NOT everything captured within ${tmo}s (see serial log)"
    PCAPX list "$pcap" >"$WORK/$name.list.txt" || true
    sed 's/^/    /' "$WORK/$name.list.txt" >&2
    PCAPX extract "$name" "$pcap" "$mac" "$OUT"
    cp "$pcap" "$OUT/$name.pcap"
    [ "$ok" = 1 ]
}

uefi_vars() { cp "$OVMF_VARS" "$WORK/$1.vars.fd"; echo "$WORK/$1.vars.fd"; }

# Fixed SMBIOS UUID per VM so that option 97 shows the byte order each
# firmware uses: 00112233-4455-6677-8899-aabbccddeeNN
OVMF_ARGS=(-M q35 -m 512
    -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF_CODE")
FAILED=()
for sc in "${SCENARIOS[@]}"; do
    case $sc in
    bios-menu)
        # SeaBIOS + QEMU's default virtio-net option ROM (iPXE from ipxe-qemu)
        # against dnsmasq's proxy, which sends a PXE menu to BIOS clients
        mac=52:54:00:18:00:04
        start_proxy dnsmasq proxy-bios-menu
        run_vm bios-menu "$mac" 180 1 "seabios-ipxe-pxebs-4011" -- \
            -M pc,graphics=off -m 256 -boot order=n \
            -uuid 00112233-4455-6677-8899-aabbccddee04 \
            -device "virtio-net-pci,netdev=n0,mac=$mac" || FAILED+=("$sc")
        stop_proxy
        ;;
    bios)
        # same client against the bare python proxy -> ProxyDHCPREQUEST; its
        # ACK names undionly.kpxe, which then does DHCP (and 4011) again
        mac=52:54:00:18:00:01
        start_proxy python proxy-bios
        run_vm bios "$mac" 240 1 "seabios-ipxe-discover seabios-ipxe-request-67 seabios-ipxe-request-4011 undionly-kpxe-discover undionly-kpxe-request-67 undionly-kpxe-request-4011" -- \
            -M pc,graphics=off -m 256 -boot order=n \
            -uuid 00112233-4455-6677-8899-aabbccddee01 \
            -device "virtio-net-pci,netdev=n0,mac=$mac" || FAILED+=("$sc")
        stop_proxy
        ;;
    uefi-pxe)
        # OVMF's own PXE client (romfile= disables the iPXE ROM), which then
        # TFTPs Debian's ipxe.efi from the proxy; ipxe.efi does its own DHCP.
        mac=52:54:00:18:00:02
        vars=$(uefi_vars uefi-pxe)
        start_proxy dnsmasq proxy-uefi-pxe
        run_vm uefi-pxe "$mac" 420 1 "ovmf-pxe-discover ovmf-pxe-request-67 ovmf-pxe-request-4011 ipxe-efi-discover ipxe-efi-request-67 ipxe-efi-request-4011" -- \
            "${OVMF_ARGS[@]}" -drive "if=pflash,format=raw,unit=1,file=$vars" \
            -uuid 00112233-4455-6677-8899-aabbccddee02 \
            -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=" || FAILED+=("$sc")
        stop_proxy
        ;;
    uefi-http)
        # OVMF HTTP boot first (PXEv4/v6 disabled via fw_cfg); the python
        # proxy offers the URL, the site server the address
        mac=52:54:00:18:00:03
        vars=$(uefi_vars uefi-http)
        start_proxy python proxy-uefi-http
        run_vm uefi-http "$mac" 300 8 "ovmf-http-discover ovmf-http-request-67" -- \
            "${OVMF_ARGS[@]}" -drive "if=pflash,format=raw,unit=1,file=$vars" \
            -uuid 00112233-4455-6677-8899-aabbccddee03 \
            -fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=n \
            -fw_cfg name=opt/org.tianocore/IPv6PXESupport,string=n \
            -device "virtio-net-pci,netdev=n0,mac=$mac,romfile=" || FAILED+=("$sc")
        stop_proxy
        log "[uefi-http] HTTP requests seen by the proxy-side web server:"
        sed 's/^/    /' "$WORK/http.log" >&2
        ;;
    *) log "unknown scenario $sc"; exit 2 ;;
    esac
done
if [ ${#FAILED[@]} -gt 0 ]; then
    log "incomplete scenarios: ${FAILED[*]}"
    exit 1
fi
log "done; files in $OUT"
