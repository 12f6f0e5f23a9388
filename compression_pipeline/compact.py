"""The compact storage format of a weight-shared model (Deep Compression's "share -> encode" steps).

Per clustered layer: a float32 codebook of at most 2^b values and the b-bit index of each weight, packed;
for a pruned layer only its nonzero weights carry an index, and a packed bitmap says where they are.
Every other tensor (biases, unclustered layers) is stored raw. The whole payload is then entropy-coded with a
standard codec (zlib: LZ77 + Huffman coding). A sha256 of the payload guards against corruption; decoding rebuilds
the dense state dict exactly, bit for bit.

Layout: MAGIC | u32 header length | header JSON | zlib(payload). The header lists each tensor's name, shape,
encoding, offsets and the payload's sha256.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import numpy as np

MAGIC = b"CPCOMPACT1"


class CompactFormatError(ValueError):
    """A compact file is truncated, corrupt, or not a compact file at all."""


def _pack_indices(idx: np.ndarray, bits: int) -> bytes:
    """Little-endian bit-packing of unsigned indices < 2**bits."""
    as_bits = ((idx[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(as_bits.reshape(-1), bitorder="little").tobytes()


def _unpack_indices(blob: bytes, bits: int, n: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(blob, np.uint8), bitorder="little")[: n * bits]
    return (flat.reshape(n, bits).astype(np.uint32) << np.arange(bits, dtype=np.uint32)).sum(1).astype(np.uint32)


def encode(state: dict[str, np.ndarray], clustered: dict[str, int], meta: dict | None = None) -> bytes:
    """Encode a state dict. ``clustered`` maps tensor name -> bits for tensors whose values come from a codebook."""
    entries, chunks, offset = [], [], 0

    def add(blob: bytes) -> tuple[int, int]:
        nonlocal offset
        chunks.append(blob)
        start, offset = offset, offset + len(blob)
        return start, len(blob)

    for name, arr in state.items():
        bits = clustered.get(name)
        arr = np.asarray(arr, dtype=np.float32 if bits else None)  # (not ascontiguousarray: it makes 0-d 1-d)
        entry = {"name": name, "shape": list(arr.shape)}
        if bits is None:  # kept as it is, in its own dtype (an int64 step counter stays one)
            little = arr.astype(arr.dtype.newbyteorder("<"))
            entry.update(encoding="raw", dtype=arr.dtype.str, data=add(little.tobytes()))
        else:
            flat = arr.reshape(-1)
            nonzero = flat != 0
            sparse = not nonzero.all()
            values = flat[nonzero] if sparse else flat
            codebook, idx = np.unique(values, return_inverse=True)
            if len(codebook) > 2 ** bits:
                raise ValueError(f"{name} has {len(codebook)} distinct nonzero values; more than 2^{bits}")
            entry.update(encoding="codebook", bits=bits, sparse=bool(sparse), count=len(values),
                         codebook=add(codebook.astype(np.float32).tobytes()),
                         indices=add(_pack_indices(idx.astype(np.uint32), bits)))
            if sparse:
                entry["mask"] = add(np.packbits(nonzero, bitorder="little").tobytes())
        entries.append(entry)
    payload = b"".join(chunks)
    header = json.dumps({"tensors": entries, "sha256": hashlib.sha256(payload).hexdigest(), "meta": meta or {}},
                        separators=(",", ":")).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + zlib.compress(payload, 9)


def decode(blob: bytes) -> tuple[dict[str, np.ndarray], dict]:
    """Rebuild the dense state dict (shared tensors float32, the others in their own dtypes) and the metadata;
    raise CompactFormatError on anything wrong."""
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 4:
        raise CompactFormatError("not a compact model file (bad magic number)")
    (hlen,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(blob[start: start + hlen])
        payload = zlib.decompress(blob[start + hlen:])
    except (ValueError, zlib.error) as e:
        raise CompactFormatError(f"truncated or corrupt compact file ({type(e).__name__}: {e})") from None
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CompactFormatError("compact file payload does not match its sha256 (corrupt)")
    get = lambda span: payload[span[0]: span[0] + span[1]]
    state = {}
    for e in header["tensors"]:
        shape, n = tuple(e["shape"]), int(np.prod(e["shape"], dtype=np.int64))
        if e["encoding"] == "raw":  # files written before dtypes were kept hold float32
            dtype = np.dtype(e.get("dtype", "<f4")).newbyteorder("<")
            arr = np.frombuffer(get(e["data"]), dtype).astype(dtype.newbyteorder("="), copy=True)
        else:
            codebook = np.frombuffer(get(e["codebook"]), np.float32)
            values = codebook[_unpack_indices(get(e["indices"]), e["bits"], e["count"])]
            if e["sparse"]:
                mask = np.unpackbits(np.frombuffer(get(e["mask"]), np.uint8), bitorder="little")[:n].astype(bool)
                arr = np.zeros(n, np.float32)
                arr[mask] = values
            else:
                arr = values.astype(np.float32)
        if arr.size != n:
            raise CompactFormatError(f"tensor {e['name']} has {arr.size} values, its shape {shape} needs {n}")
        state[e["name"]] = arr.reshape(shape)
    return state, header.get("meta", {})
