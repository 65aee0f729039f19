"""Media types of OCI / Docker manifests and of the sealed-model artifact.

One place for these strings so that the client's ``Accept`` header, the layout
writer and the model artifact all agree on them.
"""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
#: The empty descriptor's content ("{}") and digest, as OCI image spec 1.1 defines them.
EMPTY_JSON = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: Manifests that list other manifests.
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
#: Manifests that point at a config and layers.
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
#: What the client accepts when it fetches a manifest (order = preference).
ALL_MANIFEST_TYPES: tuple[str, ...] = (
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
)

# The sealed model as an OCI 1.1 artifact (docs/oci.md).
MODEL_ARTIFACT = "application/vnd.secure-model-pipeline.model.v1+json"
MODEL_SEAL = "application/vnd.secure-model-pipeline.seal.v1+json"
MODEL_SIGNATURE = "application/vnd.secure-model-pipeline.model-signature.v1+json"
MODEL_SEALED_FILE = "application/vnd.secure-model-pipeline.sealed-file.v1"
MODEL_FILE = "application/vnd.secure-model-pipeline.file.v1"
MODEL_LAYER_TYPES = frozenset({MODEL_SEAL, MODEL_SIGNATURE, MODEL_SEALED_FILE, MODEL_FILE})

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
#: Image label: every Python module of the image has its bytecode beside it (the value
#: names the format, e.g. ``bytecode-v1 cpython-311 unchecked-hash``); a local deploy
#: then compiles nothing for it (pipeline/deploy/image.py).
LABEL_BYTECODE = "io.secure-model-pipeline.bytecode"
