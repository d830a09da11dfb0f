"""Reading files out of a Qt binary resource archive (``.rcc``), as GCompris ships its photos.

Format (Qt's ``rcc`` tool, versions 1-3): a header ``b"qres"``, version, and the offsets of the tree, data and names
sections; tree entries of 14 bytes (version 1) or 22 bytes (a modification time added); a file's data is a 4-byte
size then the bytes, zlib-compressed (itself prefixed with the 4-byte uncompressed size) when the entry's flag 1 is
set.  zstd-compressed entries (flag 4) are refused.  Paths are written ``ARCHIVE.rcc:/member/path`` in the
catalogue (:data:`MEMBER_SEP`), after Qt's own ``:/path`` notation.
"""

from __future__ import annotations

import struct
import zlib

from sodec.errors import SodecError

#: separates the archive's path inside the package from the member's path inside the archive
MEMBER_SEP = ".rcc:/"
_COMPRESSED, _DIRECTORY, _ZSTD = 1, 2, 4


def split_member(path: str) -> tuple[str, str] | None:
    """``("a/b.rcc", "/x/y.webp")`` for ``"a/b.rcc:/x/y.webp"``; ``None`` for a plain path."""
    if MEMBER_SEP not in path:
        return None
    archive, _, member = path.partition(MEMBER_SEP)
    return archive + ".rcc", "/" + member


def read_rcc(data: bytes, name: str = "archive") -> dict[str, bytes]:
    """Every file of an ``.rcc`` archive: ``{"/dir/file": bytes}``.

    Raises:
        SodecError: not an rcc archive, truncated, or a zstd-compressed member.
    """
    try:
        if data[:4] != b"qres":
            raise SodecError(f"{name}: not a Qt resource archive (no 'qres' header)")
        version, tree, body, names = struct.unpack(">IIII", data[4:20])
        entry = 14 if version == 1 else 22

        def name_at(off: int) -> str:
            (n,) = struct.unpack(">H", data[names + off : names + off + 2])
            return data[names + off + 6 : names + off + 6 + 2 * n].decode("utf-16-be")

        out: dict[str, bytes] = {}
        todo = [(0, "")]
        while todo:
            index, prefix = todo.pop()
            e = tree + index * entry
            name_off, flags = struct.unpack(">IH", data[e : e + 6])
            path = prefix + ("/" + name_at(name_off) if index else "")
            if flags & _DIRECTORY:
                count, first = struct.unpack(">II", data[e + 6 : e + 14])
                todo += [(c, path) for c in range(first, first + count)]
                continue
            (off,) = struct.unpack(">I", data[e + 10 : e + 14])
            (size,) = struct.unpack(">I", data[body + off : body + off + 4])
            raw = data[body + off + 4 : body + off + 4 + size]
            if len(raw) != size:
                raise SodecError(f"{name}: truncated member {path}")
            if flags & _ZSTD:
                raise SodecError(f"{name}: member {path} is zstd-compressed (not supported)")
            out[path] = zlib.decompress(raw[4:]) if flags & _COMPRESSED else raw
        return out
    except (struct.error, UnicodeDecodeError, zlib.error) as e:
        raise SodecError(f"{name}: unreadable Qt resource archive ({e})") from None


def write_rcc(files: dict[str, bytes], compress: bool = True) -> bytes:
    """A version-1 ``.rcc`` archive holding ``files`` (``{"/dir/file": bytes}``) — for tests."""
    # the tree: directories breadth-first, each directory's children contiguous, as rcc lays them out
    tree: dict[str, list[str]] = {"": []}
    for path in sorted(files):
        parts = path.strip("/").split("/")
        for i in range(len(parts)):
            parent, child = "/".join(parts[:i]), "/".join(parts[: i + 1])
            if child not in tree.get(parent, []):
                tree.setdefault(parent, []).append(child)
            if i < len(parts) - 1:
                tree.setdefault(child, [])
    order = [""]
    for node in order:
        order += tree.get(node, [])
    index = {node: i for i, node in enumerate(order)}
    names = b""
    name_off: dict[str, int] = {}
    for node in order[1:]:
        base = node.rsplit("/", 1)[-1]
        if base not in name_off:
            name_off[base] = len(names)
            enc = base.encode("utf-16-be")
            names += struct.pack(">HI", len(base), 0) + enc
    body, entries = b"", b""
    for node in order:
        noff = name_off.get(node.rsplit("/", 1)[-1], 0) if node else 0
        if node in tree:
            kids = tree[node]
            first = index[kids[0]] if kids else 0
            entries += struct.pack(">IHII", noff, _DIRECTORY, len(kids), first)
        else:
            raw = files["/" + node]
            payload = struct.pack(">I", len(raw)) + zlib.compress(raw) if compress else raw
            entries += struct.pack(">IHHHI", noff, _COMPRESSED if compress else 0, 0, 0, len(body))
            body += struct.pack(">I", len(payload)) + payload
    tree_off = 20
    body_off = tree_off + len(entries)
    names_off = body_off + len(body)
    return b"qres" + struct.pack(">IIII", 1, tree_off, body_off, names_off) + entries + body + names
