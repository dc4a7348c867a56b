"""Nodes to index records and back: what is stored, what is embedded, what comes back.

A node is stored with LlamaIndex's own ``node_to_metadata_dict`` (text apart, metadata flattened
to what the index's filters compare: lists and dicts as JSON) and rebuilt with
``metadata_dict_to_node``; a record added without LlamaIndex comes back as a ``TextNode``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.schema import BaseNode, ImageDocument, ImageNode, MetadataMode, TextNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from .._validation import check_metadata
from ..index.hits import Hit

__all__ = [
    "DEFAULT_COARSE_SCORE_KEY",
    "NODE_STATE_KEY",
    "RESERVED_KEYS",
    "Records",
    "check_coarse_score_key",
    "embed_inputs",
    "hit_node",
    "node_records",
    "record_node",
]

NODE_STATE_KEY = "_node_content"
"""Reserved record metadata key holding the whole node as JSON (LlamaIndex's own key)."""

DEFAULT_COARSE_SCORE_KEY = "coarse_score"
"""Metadata key of a retrieved node that holds the coarse stage's score."""

RESERVED_KEYS: tuple[str, ...] = (NODE_STATE_KEY, "_node_type")
"""Record metadata keys LlamaIndex writes itself; a node's own metadata cannot use them."""

_SCALARS = (str, int, float, type(None))  # stored as they are; lists and dicts as JSON
Records = tuple[list[str], list[str], list[dict[str, Any] | None]]
"""The ids, texts and metadatas of index records, one per node."""


def check_coarse_score_key(key: str | None) -> str | None:
    """``key`` if it can name the coarse score on retrieved nodes.

    Raises:
        ValueError: If ``key`` is not ``None`` or a non-empty str that does not start with
            ``$`` and is not one of :data:`RESERVED_KEYS`.
    """
    if key is not None and (
        not isinstance(key, str) or key[:1] in ("", "$") or key in RESERVED_KEYS
    ):
        raise ValueError(
            f"coarse_score_key must be None or a non-empty str not starting with '$' and "
            f"other than {list(RESERVED_KEYS)}, got {key!r}"
        )
    return key


def _json_value(node: BaseNode, key: str, value: Any) -> Any:
    """A metadata value as JSON holds it (NumPy scalars as Python numbers), or a named error."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"node {node.node_id!r}: metadata value {key!r} must be finite")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"node {node.node_id!r}: metadata value {key!r} is a {type(value).__name__}, which "
            f"JSON cannot hold ({exc}); convert it to a str before adding the node"
        ) from None
    return value


def _record(node: BaseNode, reserved: Sequence[str]) -> tuple[str, dict[str, Any] | None]:
    """The text and metadata of the index record that stores ``node``."""
    metadata = {}
    for key, value in node.metadata.items():
        if key in reserved:
            raise ValueError(
                f"node {node.node_id!r}: metadata key {key!r} is reserved (reserved keys: "
                f"{list(reserved)}); rename it, or pass another coarse_score_key"
            )
        metadata[key] = _json_value(node, key, value)
    stored = node_to_metadata_dict(node.model_copy(update={"metadata": metadata}), remove_text=True)
    flat = {
        key: value if isinstance(value, _SCALARS) else json.dumps(value, ensure_ascii=False)
        for key, value in stored.items()
    }
    where = f"node {node.node_id!r} metadata"
    return node.get_content(metadata_mode=MetadataMode.NONE), check_metadata(flat, where)


def node_records(nodes: Sequence[BaseNode], coarse_score_key: str | None) -> Records:
    """The index records storing ``nodes``, all checked before any is stored.

    Raises:
        ValueError: For a reserved metadata key (``coarse_score_key`` included) or a
            non-finite number, naming the node and key.
        TypeError: For a metadata value JSON cannot hold, naming the node and key.
    """
    reserved = RESERVED_KEYS + ((coarse_score_key,) if coarse_score_key is not None else ())
    pairs = [_record(node, reserved) for node in nodes]
    return [node.node_id for node in nodes], [t for t, _ in pairs], [m for _, m in pairs]


def _image_fields(node: BaseNode) -> tuple[str | None, str | None, str | None]:
    """A node's image as (base64 data, path, URL): ``ImageNode``, ``ImageDocument``, or a
    ``Node`` with an ``image_resource``."""
    if isinstance(node, (ImageNode, ImageDocument)):
        return node.image, node.image_path, node.image_url
    resource = getattr(node, "image_resource", None)
    if resource is None:
        return None, None, None
    data = resource.data.decode("ascii") if resource.data else None
    path = str(resource.path) if resource.path else None
    return data, path, str(resource.url) if resource.url else None


def _node_input(node: BaseNode, i: int) -> Any:
    """What to embed for a node: its image (bytes or a path) if it has one, else its text."""
    data, path, url = _image_fields(node)
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(
                f"node {node.node_id!r} (nodes[{i}]): its image is not valid base64 ({data[:40]!r})"
            ) from None
    if path:
        return Path(path)
    if not node.get_content(metadata_mode=MetadataMode.NONE).strip():
        hint = f"; its image_url {url!r} is not downloaded: set image or image_path" if url else ""
        raise ValueError(f"node {node.node_id!r} (nodes[{i}]) has no text to embed{hint}")
    return node.get_content(metadata_mode=MetadataMode.EMBED)


def embed_inputs(nodes: Sequence[BaseNode]) -> list[Any]:
    """What to embed for each node: its image (bytes or a path) if it has one, else its text
    with metadata, as LlamaIndex embeds it.

    Raises:
        TypeError: If ``nodes`` is a single node, or an item is not a node (named).
        ValueError: For a node without text or image, or an image that is not valid base64.
    """
    if isinstance(nodes, BaseNode):
        raise TypeError("nodes must be a list of nodes, got a single node; wrap it in a list")
    for i, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            raise TypeError(f"nodes[{i}] must be a llama_index node, got {type(node).__name__}")
    return [_node_input(node, i) for i, node in enumerate(nodes)]


def record_node(id_: str, text: str | None, metadata: Mapping[str, Any]) -> BaseNode:
    """The node a record stores; a record added without LlamaIndex becomes a ``TextNode``."""
    if metadata.get("_node_type") == ImageDocument.class_name() and NODE_STATE_KEY in metadata:
        # the shared metadata_dict_to_node would rebuild it as a TextNode without its image
        node = ImageDocument.from_json(metadata[NODE_STATE_KEY])
        node.set_content(text or "")
        return node
    if NODE_STATE_KEY in metadata:
        return metadata_dict_to_node(dict(metadata), text=text)
    return TextNode(id_=id_, text=text or "", metadata=dict(metadata))


def hit_node(hit: Hit, coarse_score_key: str | None) -> BaseNode:
    """The node of a search hit, with the coarse score under ``coarse_score_key`` (``None``:
    omitted), kept out of what LlamaIndex embeds and shows the LLM."""
    node = record_node(hit.id, hit.text, hit.metadata)
    if coarse_score_key is not None:
        node.metadata[coarse_score_key] = hit.coarse_score
        node.excluded_embed_metadata_keys.append(coarse_score_key)
        node.excluded_llm_metadata_keys.append(coarse_score_key)
    return node
