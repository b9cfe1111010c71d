"""The Deployment and ReplicaSet controllers: replicas of a template, named as Kubernetes names them."""

import hashlib
import json
import random
import secrets
from dataclasses import asdict

# k8s.io/apimachinery/pkg/util/rand: the alphabet without vowels and look-alike characters.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(s):
    return "".join(SAFE_ALPHABET[ord(c) % len(SAFE_ALPHABET)] for c in s)


def template_hash(template):
    """pod-template-hash: a 32-bit FNV-1a hash of the template, safe-encoded (as the
    Deployment controller does; it hashes Go's printing of the object, we hash its JSON)."""
    h = 0x811C9DC5
    for b in json.dumps(asdict(template), sort_keys=True).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(h))


def pod_name(deployment, hash_, rng=None):
    """<deployment>-<pod-template-hash>-<5 random>, as the ReplicaSet controller's generateName;
    the API server's name generator cuts the base to 58 characters, so a name is at most 63."""
    rng = rng or random.Random(secrets.randbits(64))
    return f"{deployment}-{hash_}-"[:58] + "".join(rng.choice(SAFE_ALPHABET) for _ in range(5))


def uid(seed=None):
    """A UUID-shaped object uid."""
    h = hashlib.sha256((seed or secrets.token_hex(16)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
