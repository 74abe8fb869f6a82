"""Notice at once when another process of a multi-process run dies.

JAX notices a dead process by its missing heartbeats (~100 s), and until then the others wait inside a train
step's all-reduce or an Orbax barrier. So every process also holds a plain TCP connection with process 0 (whose
port goes through JAX's key-value store): the kernel closes it when its process ends, however it ends, and a
thread that reads it ends this process with one line. A process that finishes its run says so first ("."), and
one that is ending itself stops listening, so planned ends raise no alarm.
"""

import os
import socket
import sys
import threading

_PORT_KEY = "elax_watchdog_port"
_ending = False          # this process is ending: a peer's end is expected now
_sockets: list[socket.socket] = []


def start(client, process_id: int, num_processes: int, coordinator_host: str, on_peer_lost,
          timeout_s: int = 120) -> None:
    """Connect this process with process 0 (process 0: with every other) and watch the connections; `client`:
    JAX's coordination client, whose key-value store carries process 0's port. When a connection closes
    unexpectedly, `on_peer_lost(why)` says so (once) and returns the exit code this process ends with at once."""
    try:
        if process_id == 0:
            dual = socket.has_dualstack_ipv6()   # peers may reach the coordinator's host by IPv4 or IPv6
            with socket.create_server(("", 0), family=socket.AF_INET6 if dual else socket.AF_INET,
                                      dualstack_ipv6=dual) as server:
                client.key_value_set(_PORT_KEY, str(server.getsockname()[1]))
                server.settimeout(timeout_s)
                for _ in range(num_processes - 1):
                    _watch_in_thread(server.accept()[0], on_peer_lost)
        else:
            port = int(client.blocking_key_value_get(_PORT_KEY, timeout_s * 1000))
            _watch_in_thread(socket.create_connection((coordinator_host, port), timeout=timeout_s), on_peer_lost)
    except Exception as error:  # a firewall, say: run on without the watchdog (or part of it)
        print(f"note: no watchdog connection with process 0 ({error}); if a process dies, the others wait for "
              "JAX's heartbeat (~100 s) to notice.", file=sys.stderr, flush=True)


def _watch_in_thread(peer: socket.socket, on_peer_lost) -> None:
    peer.settimeout(None)
    _sockets.append(peer)
    threading.Thread(target=_watch, args=(peer, on_peer_lost), daemon=True, name="elax-watchdog").start()


def _watch(peer: socket.socket, on_peer_lost) -> None:
    try:
        said = peer.recv(1)
    except OSError:
        said = b""
    if said == b"." or _ending:   # the peer finished its run, or this process is ending anyway
        return
    code = on_peer_lost("its watchdog connection closed: killed, crashed or lost its host")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def ending(finished: bool) -> None:
    """This process ends: stop listening, and tell the others when its run finished (an error's end stays an
    alarm for processes still at work, which would otherwise wait for it)."""
    global _ending
    _ending = True
    for peer in _sockets if finished else ():
        try:
            peer.sendall(b".")
        except OSError:
            pass
