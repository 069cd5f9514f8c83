"""A TCP echo server and a few clients on loopback, with the native socket helpers."""

from __future__ import annotations

import socket

import tiffany


async def serve_client(conn: socket.socket) -> None:
    with conn:
        while data := await tiffany.sock_recv(conn, 65536):
            await tiffany.sock_sendall(conn, data)


async def server(listener: socket.socket, clients: int) -> None:
    for _ in range(clients):
        conn, _addr = await tiffany.sock_accept(listener)
        tiffany.spawn(serve_client(conn), name="echo")


async def client(port: int, n: int) -> int:
    with socket.socket() as sock:
        await tiffany.sock_connect(sock, ("127.0.0.1", port))
        echoed = 0
        for i in range(n):
            msg = f"message {i}\n".encode()
            await tiffany.sock_sendall(sock, msg)
            got = b""
            while len(got) < len(msg):
                got += await tiffany.sock_recv(sock, 65536)
            echoed += len(got)
        return echoed


async def main(clients: int = 10, messages: int = 100) -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        srv = tiffany.spawn(server(listener, clients), name="server")
        tasks = [tiffany.spawn(client(port, messages)) for _ in range(clients)]
        total = 0
        for t in tasks:
            total += await t
        await srv
        return total


if __name__ == "__main__":
    print(f"echoed {tiffany.run(main())} bytes")
