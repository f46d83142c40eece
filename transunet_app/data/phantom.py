"""A synthetic abdominal CT phantom with the 8 Synapse organs: for tests and the demo.

It is not real data and never claims to be: prepared datasets are marked ``synthetic: true``
and the raw ``dataset.json`` says so.

The anatomy is defined in world millimetres (RAS+) relative to the body: normalised
coordinates ``u`` (+1 = the body's right edge, -1 = its left edge), ``v`` (+1 = anterior skin,
-1 = posterior skin) and ``w`` (0 = inferior end of the modelled abdomen, near the iliac
crest; 1 = the diaphragm dome). Organs are smooth solids placed where they sit in a person:
liver on the patient's right under the diaphragm with the gallbladder on its underside,
spleen left and posterior, stomach left and anterior, kidneys posterior beside the spine
(left a little higher), aorta just anterior and left of the spine with the inferior vena cava
to its right, pancreas across the midline in front of the aorta with its tail at the spleen.
Around them: fat, abdominal-wall and back muscles, psoas, vertebrae with discs and spinal
canal, ribs in the upper part, gas- and fluid-filled bowel loops. Per case, a seed varies
body size and shape, organ positions and sizes, contrast phase, a smooth random deformation
of the whole field, noise, voxel spacing (in-plane 0.6-1.0 mm, slices 1.5-5 mm) and the
array orientation (RAS, LPS, permuted axes, ...). The voxel grid is the same world grid for
every orientation of one seed, so ``make_phantom(s, orientation="LPS")`` and
``make_phantom(s, orientation="RAS")`` hold the same anatomy voxel for voxel.

Sizes: in-plane matrices are small by default (``size="small"``: 112-144 voxels across, so
the body is a scaled-down abdomen about 70-140 mm wide at the real voxel spacing); "medium"
(192-256) and "full" (512 x 512 like a scanner's field of view, adult size) are also
available; a full case takes about half a minute.
"""
from __future__ import annotations

import json
import os
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..errors import UserError
from .labels import load_label_spec, synapse_8class_labels_path

#: Class names by the ids the phantom writes (the Synapse 8-organ order of
#: ``datasets/synapse/labels_8class.yaml``).
CLASSES = tuple(load_label_spec(synapse_8class_labels_path())["classes"])
AORTA, GALLBLADDER, LEFT_KIDNEY, RIGHT_KIDNEY, LIVER, PANCREAS, SPLEEN, STOMACH = range(1, 9)

#: (in-plane matrix range, slice-count range) per size preset.
SIZES = {
    "small": ((112, 144), (24, 60)),
    "medium": ((192, 256), (40, 90)),
    "full": ((512, 512), (60, 160)),
}
#: Voxels evaluated at once (bounds the temporary arrays of large phantoms).
_SLAB_VOXELS = 2_000_000
#: Orientation codes real scanners and converters commonly write; others are drawn too.
COMMON_ORIENTATIONS = ("RAS", "LPS", "LAS", "RPS", "LPI", "RAI", "LIP", "PSL")


class Phantom(NamedTuple):
    """One synthetic case.

    Attributes:
        image: int16 (I, J, K) Hounsfield units in the voxel order of ``affine``.
        labels: uint8 (I, J, K) Synapse class ids (0 background ... 8 stomach).
        affine: (4, 4) float64 voxel -> RAS+ mm.
    """

    image: np.ndarray
    labels: np.ndarray
    affine: np.ndarray


def _seed_list(seed: int | Sequence[int]) -> list[int]:
    return [int(s) for s in (seed if isinstance(seed, (list, tuple)) else [seed])]


def make_phantom(seed: int | Sequence[int] = 0, size: str = "small", matrix: int | None = None,
                 slices: int | None = None, orientation: str | None = None,
                 noise: bool = True) -> Phantom:
    """Generate one phantom case, deterministically from ``seed``.

    Args:
        seed: an int or a sequence of ints (``(dataset_seed, case_index)``).
        size: "small", "medium" or "full" (see module docstring).
        matrix: in-plane voxels across the patient (left-right); overrides ``size``.
        slices: number of axial slices; overrides ``size``.
        orientation: axis codes of the array (e.g. "LPS", "RAS", "PSL"); default: drawn from
            the seed. Changing it changes only the array layout, not the anatomy.
        noise: add image noise (switch off for exact comparisons between variants).

    Returns:
        A :class:`Phantom` ``(image, labels, affine)``.
    """
    if size not in SIZES:
        raise UserError(f"phantom size '{size}' is not one of {', '.join(SIZES)}")
    seeds = _seed_list(seed)
    rng = np.random.default_rng(seeds + [0])  # anatomy and grid
    rng_layout = np.random.default_rng(seeds + [1])  # orientation only
    (m_lo, m_hi), (n_lo, n_hi) = SIZES[size]

    # ---- grid: spacing, matrix, coverage (world RAS, axis-aligned)
    s_in = float(np.round(rng.uniform(0.6, 1.0), 4))
    s_z = float(rng.choice([1.5, 2.0, 2.5, 3.0, 4.0, 5.0]))
    nx = int(matrix) if matrix else int(rng.integers(m_lo, m_hi + 1))
    fov_x = nx * s_in
    a = rng.uniform(0.40, 0.45) * fov_x  # body half-width, mm
    b = a * rng.uniform(0.68, 0.80)  # body half-depth, mm
    ny = int(min(nx, np.ceil(2 * b * rng.uniform(1.08, 1.2) / s_in)))
    if size == "full" and not matrix:
        ny = nx  # a scanner's square field of view (512 x 512)
    length = 2 * a * rng.uniform(0.80, 0.95)  # modelled abdomen (w = 0..1), mm
    nz = int(slices) if slices else int(np.clip(round(length * rng.uniform(0.85, 1.0) / s_z), n_lo, n_hi))
    if min(nx, ny, nz) < 2:
        raise UserError("phantom matrix and slice count must be at least 2")
    cx, cy = rng.uniform(-0.03, 0.03) * fov_x, rng.uniform(-0.02, 0.06) * ny * s_in
    xs = (np.arange(nx) - (nx - 1) / 2) * s_in
    ys = (np.arange(ny) - (ny - 1) / 2) * s_in
    zs = (np.arange(nz) - (nz - 1) / 2) * s_z
    # Where the slab sits in the abdomen: centred near the kidneys/pancreas, jittered.
    cover = nz * s_z
    w_centre = rng.uniform(0.45, 0.6) if cover < length else 0.5
    z0 = -w_centre * length  # world z of w = 0

    # ---- anatomy on the world grid (RAS array order), then the requested layout.
    # Evaluated in slabs of slices to bound memory for "full" volumes. Every slab replays the
    # same random stream (organ parameters are scalar draws), so the result does not depend
    # on the slab size.
    hu = np.empty((nx, ny, nz), dtype=np.float32)
    lab = np.empty((nx, ny, nz), dtype=np.uint8)
    state = rng.bit_generator.state
    step = max(1, _SLAB_VOXELS // (nx * ny))
    for k0 in range(0, nz, step):
        rng.bit_generator.state = state
        X, Y, Z = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32),
                              zs[k0:k0 + step].astype(np.float32), indexing="ij")
        X, Y, Z = _deform(rng, X, Y, Z, a)
        u = (X - np.float32(cx)) / np.float32(a)
        v = (Y - np.float32(cy)) / np.float32(b)
        w = (Z - np.float32(z0)) / np.float32(length)
        del X, Y, Z
        hu[:, :, k0:k0 + step], lab[:, :, k0:k0 + step] = _anatomy(rng, u, v, w, a, b, length, s_in, s_z)
    if noise:
        hu = _image_formation(rng, hu, (s_in, s_in, s_z))
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)
    labels = lab.astype(np.uint8)

    ras_affine = np.diag([s_in, s_in, s_z, 1.0])
    ras_affine[:3, 3] = [xs[0], ys[0], zs[0]]
    code = orientation or _draw_orientation(rng_layout)
    return _reorient(image, labels, ras_affine, code)


def _draw_orientation(rng: np.random.Generator) -> str:
    if rng.random() < 0.6:
        return str(rng.choice(COMMON_ORIENTATIONS))
    axes = [("R", "L"), ("A", "P"), ("S", "I")]
    order = rng.permutation(3)
    return "".join(axes[i][int(rng.integers(2))] for i in order)


def _reorient(image: np.ndarray, labels: np.ndarray, ras_affine: np.ndarray, code: str) -> Phantom:
    from nibabel import orientations as ornt

    code = code.upper()
    try:
        target = ornt.axcodes2ornt(tuple(code))
        if len(code) != 3 or np.isnan(target).any() or sorted(target[:, 0]) != [0, 1, 2]:
            raise ValueError
    except ValueError:
        raise UserError(f"orientation '{code}' is not three axis codes like RAS or LPS") from None
    transform = ornt.ornt_transform(ornt.axcodes2ornt(("R", "A", "S")), target)
    affine = ras_affine @ ornt.inv_ornt_aff(transform, image.shape)
    return Phantom(np.ascontiguousarray(ornt.apply_orientation(image, transform)),
                   np.ascontiguousarray(ornt.apply_orientation(labels, transform)), affine)


def _deform(rng, X, Y, Z, scale):
    """Smooth random displacement of the sampling positions (a few long-wave sines), mm."""
    out = []
    for comp in (X, Y, Z):
        d = np.zeros_like(comp)
        for _ in range(3):
            k = rng.normal(size=3)
            k *= 2 * np.pi / (np.linalg.norm(k) * rng.uniform(1.2, 2.5) * scale)
            amp = rng.uniform(0.015, 0.04) * scale
            d += amp * np.sin(k[0] * X + k[1] * Y + k[2] * Z + rng.uniform(0, 2 * np.pi)).astype(np.float32)
        out.append(comp + d)
    return out


def _ellipsoid(u, v, w, c, r, angle=0.0):
    """Normalised radius field of a (rotated in-plane) ellipsoid: <= 1 inside."""
    du, dv, dw = u - c[0], v - c[1], w - c[2]
    if angle:
        ca, sa = np.cos(angle), np.sin(angle)
        du, dv = ca * du - sa * dv, sa * du + ca * dv
    return (du / r[0]) ** 2 + (dv / r[1]) ** 2 + (dw / r[2]) ** 2


def _tube(u, v, w, points, radii, a, b, length):
    """Distance field (in units of the local radius) to a polyline through ``points``."""
    P = (u * np.float32(a), v * np.float32(b), w * np.float32(length))
    best = np.full(u.shape, np.inf, dtype=np.float32)
    pts = [np.array([p[0] * a, p[1] * b, p[2] * length], dtype=np.float32) for p in points]
    for (p0, p1), (r0, r1) in zip(zip(pts[:-1], pts[1:]), zip(radii[:-1], radii[1:])):
        seg = p1 - p0
        rel = [P[i] - p0[i] for i in range(3)]
        t = np.clip(sum(rel[i] * seg[i] for i in range(3)) / np.float32(seg @ seg), 0.0, 1.0)
        dist = np.sqrt(sum((rel[i] - t * seg[i]) ** 2 for i in range(3)))
        best = np.minimum(best, dist / ((np.float32(r0) + t * np.float32(r1 - r0)) * np.float32(a)))
    return best


def _anatomy(rng, u, v, w, a, b, length, s_in, s_z):
    """HU and label fields. u, v, w: normalised coordinates (see module docstring)."""
    def jit(x, s=0.04):
        return x + rng.uniform(-s, s)

    def scl(lo=0.85, hi=1.15):
        return rng.uniform(lo, hi)

    contrast = rng.uniform(0.6, 1.2)  # portal-venous enhancement strength
    fat = rng.uniform(-110, -85)
    hu = np.full(u.shape, -1000.0, dtype=np.float32)
    lab = np.zeros(u.shape, dtype=np.uint8)

    # Body outline: a slightly flattened-back ellipse, skin/subcutaneous fat/muscle wall.
    r_body = np.sqrt(u ** 2 + (v * np.where(v < 0, 1.08, 1.0)) ** 2)
    body = r_body <= 1.0
    hu[body] = fat - 10  # subcutaneous fat
    r_in = rng.uniform(0.84, 0.88)
    wall = body & (r_body > r_in) & (r_body <= r_in + rng.uniform(0.04, 0.06))
    hu[wall] = rng.uniform(40, 55)  # abdominal wall muscles
    inner = body & (r_body <= r_in)
    hu[inner] = fat

    # Spine: vertebral body (cortex, spongy bone, discs), canal, posterior elements.
    sv = (jit(0.0, 0.02), jit(-0.44, 0.03))
    r_vert = np.sqrt(((u - sv[0]) / 0.13) ** 2 + ((v - sv[1]) / (0.13 * a / b)) ** 2)
    period = rng.uniform(0.16, 0.2)  # vertebral level height in w units
    disc = (np.mod(w / period + rng.uniform(0, 1), 1.0) < 0.18)
    vert = r_vert <= 1.0
    hu[vert] = np.where(disc[vert], 90.0, 230.0)
    hu[vert & (r_vert > 0.8) & ~disc] = 650.0
    canal = np.sqrt(((u - sv[0]) / 0.055) ** 2 + ((v - sv[1] + 0.25) / (0.06 * a / b)) ** 2) <= 1.0
    arch = (np.sqrt(((u - sv[0]) / 0.12) ** 2 + ((v - sv[1] + 0.27) / (0.12 * a / b)) ** 2) <= 1.0) & ~canal
    spinous = (np.abs(u - sv[0]) < 0.03) & (v < sv[1] - 0.3) & (v > -0.83)
    hu[(arch | spinous) & ~disc] = 500.0
    hu[canal] = 20.0
    # Back muscles and psoas (psoas grows towards the pelvis).
    for side in (1, -1):
        para = _ellipsoid(u, v, w, (side * 0.2, sv[1] - 0.3, 0.5), (0.15, 0.16, 10.0)) <= 1.0
        hu[para & inner & ~(arch | spinous | canal)] = rng.uniform(40, 55)
        r_psoas = 0.03 + 0.1 * np.clip(0.6 - w, 0, 0.6)
        psoas = (((u - side * 0.17) / r_psoas) ** 2 + ((v - sv[1] - 0.02) / (r_psoas * a / b)) ** 2 <= 1.0) & (w < 0.6)
        hu[psoas & ~vert] = rng.uniform(40, 55)
    # Ribs: periodic slanted arcs just inside the wall, upper abdomen only.
    theta = np.arctan2(v, u)
    rib_phase = np.mod((w * length) / (rng.uniform(0.12, 0.16) * length) + 0.25 * np.abs(theta), 1.0)
    ribs = body & (r_body > r_in - 0.05) & (r_body < r_in - 0.01) & (rib_phase < 0.2) & (w > 0.5) & (v < 0.6)
    hu[ribs] = 600.0

    # Bowel loops (unlabelled): gas or fluid filled, lower and anterior abdomen.
    for _ in range(int(rng.integers(8, 15))):
        c = (rng.uniform(-0.6, 0.6), rng.uniform(-0.15, 0.6), rng.uniform(0.0, 0.5))
        r = rng.uniform(0.07, 0.14)
        e = _ellipsoid(u, v, w, c, (r, r * a / b, r * a / length * 1.5), rng.uniform(0, np.pi)) <= 1.0
        e &= inner
        hu[e] = rng.uniform(25, 45)
        core = _ellipsoid(u, v, w, c, (0.7 * r, 0.7 * r * a / b, 0.7 * r * a / length * 1.5)) <= 1.0
        hu[core & e] = -850.0 if rng.random() < 0.4 else rng.uniform(0, 25)

    def put(mask, label, value):
        mask = mask & inner
        hu[mask] = value
        if label:
            lab[mask] = label
        return mask

    # Liver: right lobe, left lobe reaching over the midline, inferior tip.
    s_liv = scl()
    liver = (_ellipsoid(u, v, w, (jit(0.4), jit(0.08), jit(0.74)), (0.45 * s_liv, 0.62 * s_liv, 0.27 * s_liv)) <= 1.0)
    liver |= _ellipsoid(u, v, w, (jit(-0.02), jit(0.38), jit(0.82)), (0.38 * s_liv, 0.3, 0.13 * s_liv), 0.3) <= 1.0
    liver |= _ellipsoid(u, v, w, (jit(0.52), jit(0.0), jit(0.52)), (0.22 * s_liv, 0.35, 0.18 * s_liv)) <= 1.0
    liver &= r_vert > 1.3
    put(liver, LIVER, 60 + 45 * contrast)
    # Gallbladder: a pear on the liver's underside, anterior.
    s_gb = scl(0.7, 1.3)
    gb = _ellipsoid(u, v, w, (jit(0.3), jit(0.42, 0.05), jit(0.56)), (0.09 * s_gb, 0.15 * s_gb, 0.1 * s_gb), 0.5) <= 1.0
    put(gb, GALLBLADDER, rng.uniform(0, 20))
    # Stomach: left upper quadrant, anterior; wall, fluid, gas cap on the anterior side.
    s_st = scl()
    st_c = (jit(-0.32), jit(0.3), jit(0.72))
    st_r = (0.27 * s_st, 0.3 * s_st, 0.2 * s_st)
    stomach = _ellipsoid(u, v, w, st_c, st_r, -0.4) <= 1.0
    put(stomach, STOMACH, rng.uniform(35, 55))
    lumen = (_ellipsoid(u, v, w, st_c, tuple(0.8 * r for r in st_r), -0.4) <= 1.0) & stomach
    hu[lumen] = rng.uniform(5, 25)
    hu[lumen & (v > st_c[1] + 0.12)] = -900.0
    # Spleen: left, posterior, under the diaphragm.
    s_sp = scl()
    spleen = _ellipsoid(u, v, w, (jit(-0.63), jit(-0.22), jit(0.7)), (0.14 * s_sp, 0.33 * s_sp, 0.2 * s_sp), 0.6) <= 1.0
    put(spleen, SPLEEN, 60 + 55 * contrast)
    # Pancreas: head by the duodenum (right), body over the aorta, tail at the splenic hilum.
    s_pa = scl()
    pts = [(jit(0.16, 0.03), jit(0.1, 0.03), jit(0.47, 0.03)), (0.0, jit(0.22, 0.03), jit(0.52, 0.03)),
           (-0.25, jit(0.12, 0.03), jit(0.56, 0.03)), (jit(-0.5, 0.03), jit(-0.12, 0.03), jit(0.6, 0.03))]
    pancreas = _tube(u, v, w, pts, [0.1 * s_pa, 0.065 * s_pa, 0.06 * s_pa, 0.05 * s_pa], a, b, length) <= 1.0
    put(pancreas & ~stomach, PANCREAS, 50 + 45 * contrast)
    # Kidneys: posterior beside the spine, left higher than right; renal sinus fat medially.
    for side, label, w_c in ((1, RIGHT_KIDNEY, 0.38), (-1, LEFT_KIDNEY, 0.45)):
        s_k = scl(0.9, 1.1)
        kc = (side * jit(0.38, 0.03), sv[1] + jit(0.06, 0.03), jit(w_c, 0.03))
        kidney = _ellipsoid(u, v, w, kc, (0.13 * s_k, 0.23 * s_k, 0.2 * s_k), side * 0.5) <= 1.0
        kidney &= r_vert > 1.2
        put(kidney, label, 60 + 120 * contrast)
        sinus = _ellipsoid(u, v, w, (kc[0] - side * 0.07, kc[1] + 0.05, kc[2]), (0.05, 0.09, 0.09)) <= 1.0
        hu[sinus & kidney] = fat
        lab[sinus & kidney] = 0
    # Great vessels: aorta left-anterior of the spine, IVC to its right (unlabelled).
    drift = rng.uniform(-0.03, 0.03)
    ac = (jit(-0.07, 0.02) + drift * (w - 0.5), sv[1] + jit(0.3, 0.03))
    r_ao = 0.065 * scl(0.85, 1.15)
    aorta = (((u - ac[0]) / r_ao) ** 2 + ((v - ac[1]) / (r_ao * a / b)) ** 2 <= 1.0) & (w > jit(0.08, 0.04))
    put(aorta, AORTA, 40 + 160 * contrast)
    ivc = ((u - (ac[0] + 0.2)) / 0.08) ** 2 + ((v - ac[1] - 0.03) / (0.055 * a / b)) ** 2 <= 1.0
    put(ivc & ~liver & ~pancreas, 0, 40 + 110 * contrast)
    return hu, lab


def _image_formation(rng, hu: np.ndarray, spacing: tuple) -> np.ndarray:
    """Partial-volume blur, low-frequency texture and quantum noise (HU)."""
    from scipy.ndimage import gaussian_filter

    blurred = gaussian_filter(hu, sigma=[0.5, 0.5, 0.35], mode="nearest")
    texture = gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), sigma=[2.0, 2.0, 1.0])
    texture *= 6.0 / max(float(texture.std()), 1e-6)
    noise = rng.normal(0.0, rng.uniform(8.0, 20.0), size=hu.shape).astype(np.float32)
    inside = blurred > -900
    return blurred + (texture + noise) * inside


# --------------------------------------------------------------------------- dataset


def prepare_phantom(out: str | os.PathLike, cases: int = 8, seed: int = 0, size: str = "small",
                    matrix: int | None = None, slices: int | None = None, test_fraction: float = 0.25,
                    overwrite: bool = False, progress: bool = False,
                    report_skip: Callable[[str, str], None] | None = None):
    """Write a synthetic dataset: raw NIfTI cases and the prepared training layout.

    Layout::

        OUT/raw/imagesTr/phantom_NNNN.nii.gz   int16 HU, each case in its own orientation
        OUT/raw/labelsTr/phantom_NNNN.nii.gz   uint8 Synapse class ids
        OUT/raw/dataset.json                   MSD-style description, "synthetic": true
        OUT/train_npz, test_vol_h5, lists_Synapse, dataset.yaml   (synthetic: true)

    Args:
        out: output folder (must be empty unless ``overwrite``).
        cases: number of cases (at least 2: one is always held out for testing).
        seed: dataset seed; case ``i`` is ``make_phantom((seed, i))``.
        size: phantom size preset.
        matrix, slices: fixed in-plane matrix / slice count instead of the preset's ranges.
        test_fraction: share of the cases (the last ones) written as test volumes.
        overwrite: replace a previous phantom dataset in ``out``.
        progress: tqdm progress bars.
        report_skip: forwarded to the preparation.

    Returns:
        The :class:`~transunet_app.data.synapse.PrepareReport` of the preparation.
    """
    from tqdm import tqdm

    from .files import atomic_write
    from .folders import prepare_folder
    from .io import write_nifti
    from .layout import ensure_output_dir

    if cases < 2:
        raise UserError(f"--cases {cases}: need at least 2 phantom cases (one is held out for testing)")
    out_dir = ensure_output_dir(out, overwrite)
    raw = out_dir / "raw"
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
        for old in (raw / sub).glob("phantom_*.nii.gz"):
            old.unlink()
    names = [f"phantom_{i + 1:04d}" for i in range(cases)]
    for i, name in enumerate(tqdm(names, desc="phantom", unit="case", disable=not progress, dynamic_ncols=True)):
        ph = make_phantom((seed, i), size=size, matrix=matrix, slices=slices)
        write_nifti(raw / "imagesTr" / f"{name}.nii.gz", ph.image, ph.affine, overwrite=True,
                    description=f"SYNTHETIC phantom seed={seed} case={i}")
        write_nifti(raw / "labelsTr" / f"{name}.nii.gz", ph.labels, ph.affine, overwrite=True,
                    description=f"SYNTHETIC phantom labels seed={seed} case={i}")
    n_test = min(max(1, int(round(cases * test_fraction))), cases - 1)
    description = {
        "name": "phantom",
        "description": (f"Synthetic abdominal CT phantom generated by transunet-app (seed {seed}, size {size}). "
                        "NOT real patient data."),
        "synthetic": True,
        "reference": "transunet_app.data.phantom",
        "licence": "CC0 (generated)",
        "modality": {"0": "CT"},
        "labels": {str(i): n for i, n in enumerate(CLASSES)},
        "numTraining": cases,
        "training": [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names],
        "test": [],
    }
    atomic_write(raw / "dataset.json", lambda p: p.write_text(json.dumps(description, indent=2) + "\n"), overwrite=True)
    splits = {"train": names[: cases - n_test], "test": names[cases - n_test:]}
    return prepare_folder(raw, out_dir, splits=splits, overwrite=True, progress=progress,
                          report_skip=report_skip, synthetic=True, _output_checked=True,
                          source_extra={"generator": "phantom", "seed": seed, "cases": cases, "size": size,
                                        "matrix": matrix, "slices": slices})
