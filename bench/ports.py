"""Free loopback ports for the bench scripts (imported from bench/)."""
import random
import socket


def free_ports(n):
    """n consecutive free ports below the kernel's ephemeral range, so that no
    outgoing connection (there are thousands) takes one between this check and
    its use by a listener (a worker's slot port taken that way fails a rolling
    restart)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    while True:
        base = random.randrange(20000, ephemeral - n)
        ok = True
        for p in range(base, base + n):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                t.close()
        if ok:
            return base
