"""Reading untrusted model files safely: zip archives member by member in memory (names,
declared sizes, compression ratios and the bytes actually read all checked; nothing is
extracted to disk) and HDF5 files checked before libhdf5 parses them (signature,
superblock fields, checksum of version 2/3 superblocks, addresses inside the file).

Every failure is a ``ValueError`` whose message starts with the file's name.
"""
import os
import struct
import zipfile
import zlib

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")

# A Keras archive stores its members uncompressed; DEFLATE cannot expand more than about
# 1032:1.  A member declaring more than this ratio (beyond a small floor) is a bomb.
MAX_RATIO = 200
RATIO_FLOOR = 1 << 20               # members below 1 MiB are never judged by their ratio
MAX_MEMBER = 1 << 36                # 64 GiB: larger than any model this engine can hold
MAX_TOTAL = 1 << 37
MAX_MEMBERS = 10000


class UnsafeFile(ValueError):
    """A file refused for what it would do to the reader (an archive member leaving the
    archive, a decompression bomb, ...), not merely for being damaged."""


def bad(path, why):
    return ValueError(f"{path!r}: {why}")


def unsafe(path, why):
    return UnsafeFile(f"{path!r}: {why}")


def file_head(path, n=2048):
    """The first ``n`` bytes of ``path`` (FileNotFoundError / IsADirectoryError as usual)."""
    with open(path, "rb") as f:
        return f.read(n)


def hdf5_offset(head):
    """Where the HDF5 signature sits (0, 512, 1024, ...: after a user block), or None."""
    off = 0
    while off + 8 <= len(head):
        if head[off:off + 8] == HDF5_SIGNATURE:
            return off
        off = 512 if off == 0 else off * 2
    return None


def is_zip(head):
    return head[:4] in ZIP_SIGNATURES


# ---------------------------------------------------------------------- zip archives
def _check_name(path, name):
    n = name.replace("\\", "/")
    if not n or n.startswith("/") or (len(n) > 1 and n[1] == ":") or \
            any(part == ".." for part in n.split("/")) or "\x00" in n:
        raise unsafe(path, f"archive member name {name!r} is absolute or leaves the archive "
                        "('..'); refusing the file")


class Archive:
    """A zip archive opened for reading members into memory, all checked up front."""

    def __init__(self, source, path):
        self.path = path
        try:
            self.zf = zipfile.ZipFile(source)
            infos = self.zf.infolist()
        except zipfile.BadZipFile as e:
            raise bad(path, f"not a valid zip archive ({e}); the file may be truncated or "
                            "damaged") from None
        except (OSError, EOFError, ValueError, NotImplementedError, struct.error) as e:
            raise bad(path, f"cannot read the zip archive: {e}") from None
        if len(infos) > MAX_MEMBERS:
            raise unsafe(path, f"the archive has {len(infos)} members (at most {MAX_MEMBERS})")
        seen = set()
        total = 0
        for info in infos:
            _check_name(path, info.filename)
            if info.filename in seen:
                raise unsafe(path, f"archive member {info.filename!r} appears twice")
            seen.add(info.filename)
            if info.flag_bits & 0x1:
                raise unsafe(path, f"archive member {info.filename!r} is encrypted")
            if info.file_size > MAX_MEMBER:
                raise unsafe(path, f"archive member {info.filename!r} declares "
                                f"{info.file_size} bytes (more than {MAX_MEMBER})")
            if info.file_size > RATIO_FLOOR and \
                    info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise unsafe(path, f"archive member {info.filename!r} declares {info.file_size} "
                                f"bytes stored in {info.compress_size}: a decompression "
                                "bomb; refusing the file")
            total += info.file_size
        if total > MAX_TOTAL:
            raise unsafe(path, f"the archive declares {total} bytes in all (more than "
                            f"{MAX_TOTAL})")
        self.names = [i.filename for i in infos]

    def __contains__(self, name):
        return name in self.names

    def read(self, name, limit=MAX_MEMBER):
        """The bytes of member ``name``; never more than its declared size (nor ``limit``)
        are read, whatever the compressed stream holds."""
        info = self.zf.getinfo(name)
        cap = min(info.file_size, limit)
        if info.file_size > limit:
            raise bad(self.path, f"archive member {name!r} declares {info.file_size} bytes "
                                 f"(at most {limit} expected)")
        chunks = []
        got = 0
        try:
            with self.zf.open(info) as f:
                while True:
                    block = f.read(min(1 << 20, cap + 1 - got))
                    if not block:
                        break
                    got += len(block)
                    if got > cap:
                        raise unsafe(self.path, f"archive member {name!r} holds more bytes than "
                                             "it declares: a decompression bomb")
                    chunks.append(block)
        except zipfile.BadZipFile as e:
            raise bad(self.path, f"archive member {name!r} is damaged ({e})") from None
        except (OSError, EOFError, zlib.error, NotImplementedError, struct.error) as e:
            raise bad(self.path, f"archive member {name!r} cannot be read ({e}); the file "
                                 "may be truncated") from None
        if got != info.file_size:
            raise bad(self.path, f"archive member {name!r} holds {got} bytes but declares "
                                 f"{info.file_size}; the file is truncated or damaged")
        return b"".join(chunks)

    def close(self):
        self.zf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------- HDF5
_M = 0xFFFFFFFF


def _rot(x, k):
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data, initval=0):
    """Bob Jenkins' lookup3 ``hashlittle``: the checksum of HDF5 metadata blocks."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & _M
        a = (a - c) & _M; a ^= _rot(c, 4); c = (c + b) & _M        # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 6); a = (a + c) & _M        # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 8); b = (b + a) & _M        # noqa: E702
        a = (a - c) & _M; a ^= _rot(c, 16); c = (c + b) & _M       # noqa: E702
        b = (b - a) & _M; b ^= _rot(a, 19); a = (a + c) & _M       # noqa: E702
        c = (c - b) & _M; c ^= _rot(b, 4); b = (b + a) & _M        # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = bytes(data[i:i + n]) + b"\x00" * (12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    c ^= b; c = (c - _rot(b, 14)) & _M     # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _M     # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _M     # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _M     # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _M      # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _M     # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _M     # noqa: E702
    return c


_UNDEF = {2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


def check_hdf5(data, path):
    """Check an in-memory HDF5 image before h5py (libhdf5) sees it: the signature, a known
    superblock version, sane field sizes, the superblock checksum (versions 2 and 3), and
    that the end-of-file address and the root group's address lie inside the data (a
    truncated file is refused here, not inside libhdf5)."""
    size = len(data)
    if size == 0:
        raise bad(path, "the HDF5 data is empty")
    off = hdf5_offset(data[:1 << 16])
    if off is None:
        raise bad(path, "not an HDF5 file (no HDF5 signature)")
    sb = data[off:off + 256]
    if len(sb) < 12:
        raise bad(path, "the HDF5 superblock is truncated")
    version = sb[8]
    if version in (0, 1):
        if len(sb) < 24:
            raise bad(path, "the HDF5 superblock is truncated")
        so, sl = sb[13], sb[14]
        pos = 24 + (4 if version == 1 else 0)
    elif version in (2, 3):
        so, sl = sb[9], sb[10]
        pos = 12
    else:
        raise bad(path, f"unknown HDF5 superblock version {version}")
    if so not in (2, 4, 8) or sl not in (2, 4, 8):
        raise bad(path, f"damaged HDF5 superblock (offset size {so}, length size {sl})")
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[so]
    n_addr = 4
    need = pos + n_addr * so + (so + so + 24 if version in (0, 1) else 4)
    if len(sb) < need:
        raise bad(path, "the HDF5 superblock is truncated")
    addrs = [struct.unpack_from(fmt, sb, pos + k * so)[0] for k in range(n_addr)]
    if version in (0, 1):
        base, _free, eof, _driver = addrs
        root_at = pos + 4 * so + so          # the root symbol table entry: name offset, then
        root = struct.unpack_from(fmt, sb, root_at)[0]   # the object header address
    else:
        base, _ext, eof, root = addrs
        end = pos + 4 * so
        stored = struct.unpack_from("<I", sb, end)[0]
        if lookup3(sb[:end]) != stored:
            raise bad(path, "the HDF5 superblock checksum does not match: the file is "
                            "damaged")
    undef = _UNDEF[so]
    if base == undef or eof == undef or root == undef:
        raise bad(path, "damaged HDF5 superblock (undefined addresses)")
    if base != off and base != 0:
        raise bad(path, f"damaged HDF5 superblock (base address {base})")
    if base + eof > size:
        raise bad(path, f"the HDF5 data is truncated: it declares {base + eof} bytes but "
                        f"holds {size}")
    if root >= eof:
        raise bad(path, "damaged HDF5 superblock (root group outside the file)")
    return True


def read_file(path, limit=MAX_MEMBER):
    """The whole file at ``path`` (a regular file) as bytes."""
    st = os.stat(path)
    if st.st_size > limit:
        raise bad(path, f"the file holds {st.st_size} bytes (more than {limit})")
    with open(path, "rb") as f:
        return f.read()
