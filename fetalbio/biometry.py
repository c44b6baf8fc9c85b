"""Fetal head biometry: perimeter, cephalic index, gestational age and INTERGROWTH-21st centiles.

Pure Python (``math`` only), no TensorFlow. Every length is in millimetres (``_mm``), every
gestational age (GA) in exact weeks (``_weeks``: 20.5 = 20 weeks 3.5 days) unless a name says
``_days``. Each formula cites its published source; the coefficients are the published ones, not
refitted.

Measurement conventions matter: the published formulas were fitted to hand-placed calliper
measurements, and fetalbio measures an ellipse fitted to the skull outline (see
:data:`BPD_CONVENTION`):

* The INTERGROWTH-21st ultrasound protocol (Papageorghiou et al. 2014) places the HC ellipse around
  the outer border of the skull, OFD callipers outer-to-outer and BPD callipers outer-to-inner
  (leading edge to leading edge). An outer-to-inner BPD equals the distance between the centres of
  the two parietal walls when both walls are equally thick, i.e. it matches :data:`BPD_CONVENTION`;
  an OFD measured on the centre line of the skull wall is smaller than the outer-to-outer OFD by
  about one wall thickness, and the HC by about pi wall thicknesses, which biases those z-scores
  slightly downwards.
* Hadlock et al. (1984) used real-time calliper measurements from their own protocol; the GA
  estimates are population regressions with a 2-SD spread of about +/-1 to +/-3.6 weeks
  (larger late in pregnancy).

The GA functions never raise and never extrapolate: a length that is not a finite positive number,
that would overflow a formula, or whose estimate falls outside the formula's validity range gives
``None``; :func:`ga_reason` and :attr:`Biometry.ga_note` say why.

None of these numbers is a diagnosis.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

__all__ = [
    "BPD_CONVENTION",
    "HADLOCK_GA_RANGE_WEEKS",
    "INTERGROWTH_DATING_GA_RANGE_WEEKS",
    "INTERGROWTH_GA_RANGE_WEEKS",
    "Biometry",
    "GaFormula",
    "Measure",
    "biometry_from_axes",
    "centile",
    "cephalic_index",
    "ga_hadlock_bpd_weeks",
    "ga_hadlock_hc_weeks",
    "ga_intergrowth_hc_days",
    "ga_intergrowth_hc_weeks",
    "ga_reason",
    "intergrowth_mean_sd_mm",
    "ramanujan_perimeter",
    "zscore",
]

BPD_CONVENTION = (
    "axis of the ellipse fitted to the skull outline (outline-to-outline, centre of the skull wall)"
)

Measure = Literal["hc", "bpd", "ofd"]

#: GA range (weeks, inclusive) of the INTERGROWTH-21st fetal growth standards (Papageorghiou 2014).
INTERGROWTH_GA_RANGE_WEEKS: tuple[float, float] = (14.0, 40.0)

#: GA range (weeks) of the 361 fetuses from which Hadlock et al. (1984) derived their regressions
#: ("a cross-sectional study of 361 fetuses between 14 and 42 menstrual weeks", abstract). A Hadlock
#: estimate outside this range is an extrapolation and :func:`biometry_from_axes` reports ``None``.
#: Equivalent measurement ranges: HC about 89-358 mm, BPD about 24-102 mm.
HADLOCK_GA_RANGE_WEEKS: tuple[float, float] = (14.0, 42.0)

#: GA window for dating by HC alone with the INTERGROWTH-21st equation (Papageorghiou 2016): scans
#: from 14+0 up to (not including) 26+0 weeks, i.e. 98 to 181 days. Taken from the documentation of
#: the INTERGROWTH-21st implementation in the ``gigs`` R package (``ig_fet_estimate_ga``: "head
#: circumference ... taken from an ultrasound scan obtained 98 to 181 days since the last menstrual
#: period"); the dating error grows steeply in the third trimester.
INTERGROWTH_DATING_GA_RANGE_WEEKS: tuple[float, float] = (14.0, 26.0)


def _check_positive(name: str, value: float) -> float:
    """Return ``value`` as a float, or raise ValueError if it is not a finite number > 0."""
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return v


# --------------------------------------------------------------------------- geometry


def ramanujan_perimeter(semi_a: float, semi_b: float) -> float:
    """Perimeter of an ellipse from its two semi-axes (either order), in the unit of the semi-axes.

    Ramanujan's second approximation (Ramanujan S. "Modular equations and approximations to pi."
    Quarterly Journal of Pure and Applied Mathematics 1914;45:350-372)::

        h = ((a - b) / (a + b))**2
        P = pi (a + b) (1 + 3 h / (10 + sqrt(4 - 3 h)))

    Exact for a circle; for fetal-head shapes (b/a > 0.6) the relative error is below 1e-9. In the
    degenerate limit b -> 0 it gives 14 pi a / 11 = 3.9984 a instead of 4 a (error 4e-4).

    Raises:
        ValueError: if a semi-axis is not a finite positive number.
    """
    a = _check_positive("semi_a", semi_a)
    b = _check_positive("semi_b", semi_b)
    h = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1.0 + 3.0 * h / (10.0 + math.sqrt(4.0 - 3.0 * h)))


def cephalic_index(bpd_mm: float, ofd_mm: float) -> float:
    """Cephalic index (dimensionless, in percent): BPD / OFD x 100.

    Hadlock FP, Deter RL, Carpenter RJ, Park SK. "Estimating fetal age: effect of head shape on BPD."
    AJR Am J Roentgenol 1981;137:83-85 (cephalic index = short axis / long axis x 100; in-utero mean
    78.3 at 14-40 weeks, values below 74 or above 83 lie more than 1 SD from the mean and make the
    BPD an unreliable age estimate, where HC should be used instead).

    Raises:
        ValueError: if a diameter is not a finite positive number.
    """
    bpd = _check_positive("bpd_mm", bpd_mm)
    ofd = _check_positive("ofd_mm", ofd_mm)
    return bpd / ofd * 100.0


# --------------------------------------------------------------------------- gestational age
#
# Every GA function is total: it returns ``None`` instead of raising or extrapolating when the input is
# not a finite positive length, would overflow the formula (a head of kilometres from an absurd pixel
# size), or gives an age outside the range the formula was derived for. :func:`ga_estimate` says why.


@dataclass(frozen=True)
class _GaFormula:
    """One published GA regression: ``weeks(length_mm)`` and the GA range (weeks) it is valid for."""

    name: str  # e.g. "Hadlock HC", used in reasons
    measure: str  # "HC" or "BPD"
    weeks: Callable[[float], float]  # the bare formula, length in mm -> GA in weeks (may overflow)
    ga_range: tuple[float, float]
    upper_inclusive: bool
    min_mm: float  # below this the formula is not monotone (or meaningless): out of range

    @cached_property
    def mm_range(self) -> tuple[float, float]:
        """Lengths (mm) whose estimate lies in :attr:`ga_range`, by bisection of the monotone formula."""
        lo, hi = self.ga_range
        return _invert(self.weeks, lo, self.min_mm), _invert(self.weeks, hi, self.min_mm)


def _invert(fn: Callable[[float], float], target: float, lo: float, hi: float = 1e3) -> float:
    """The length (mm) at which the increasing formula ``fn`` reaches ``target`` weeks (bisection over
    ``lo``-``hi`` mm; every formula here exceeds 42 weeks well before 1 m and does not overflow there)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if fn(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _hadlock_hc(hc_mm: float) -> float:
    hc_cm = hc_mm / 10.0
    return 8.96 + 0.540 * hc_cm + 0.0003 * hc_cm**3


def _hadlock_bpd(bpd_mm: float) -> float:
    bpd_cm = bpd_mm / 10.0
    return 9.54 + 1.482 * bpd_cm + 0.1676 * bpd_cm**2


def _intergrowth_hc_days(hc_mm: float) -> float:
    return math.exp(0.05970 * math.log(hc_mm) ** 2 + 0.000000006409 * hc_mm**3 + 3.3258)


_HADLOCK_HC = _GaFormula("Hadlock HC", "HC", _hadlock_hc, HADLOCK_GA_RANGE_WEEKS, True, 0.0)
_HADLOCK_BPD = _GaFormula("Hadlock BPD", "BPD", _hadlock_bpd, HADLOCK_GA_RANGE_WEEKS, True, 0.0)
# ln(GA) has a minimum at HC = 1 mm: below it the equation grows again as HC shrinks (HC 0.01 mm would
# "date" to 14 weeks), so lengths under 1 mm are out of range whatever the formula gives.
_INTERGROWTH_HC = _GaFormula(
    "INTERGROWTH-21st HC dating",
    "HC",
    lambda hc: _intergrowth_hc_days(hc) / 7.0,
    INTERGROWTH_DATING_GA_RANGE_WEEKS,
    False,
    1.0,
)


def _range_text(f: _GaFormula) -> str:
    lo, hi = f.ga_range
    weeks = f"{lo:g}-{hi:g} weeks" if f.upper_inclusive else f"{lo:g}+0 to {hi - 1:g}+6 weeks"
    mlo, mhi = f.mm_range
    return f"{weeks}, {f.measure} about {mlo:.0f}-{mhi:.0f} mm"


def _estimate(f: _GaFormula, length_mm: float) -> tuple[float | None, str]:
    """``(GA in weeks, "")`` or ``(None, reason)``; never raises."""
    try:
        v = float(length_mm)
    except (TypeError, ValueError):
        return None, f"{f.measure} {length_mm!r} is not a number"
    if not math.isfinite(v) or v <= 0.0:
        return None, f"{f.measure} {v:g} mm is not a finite positive length"
    try:
        ga = f.weeks(v) if v >= f.min_mm else None
    except (OverflowError, ValueError, ZeroDivisionError):
        ga = None
    lo, hi = f.ga_range
    ok = ga is not None and math.isfinite(ga) and lo <= ga and (ga <= hi if f.upper_inclusive else ga < hi)
    if ok:
        return ga, ""
    return None, f"{f.measure} {v:.4g} mm outside the {f.name} range ({_range_text(f)})"


def ga_hadlock_hc_weeks(hc_mm: float) -> float | None:
    """Gestational age (weeks) from head circumference (mm), Hadlock 1984; ``None`` out of range.

    Hadlock FP, Deter RL, Harrist RB, Park SK. "Estimating fetal age: computer-assisted analysis of
    multiple fetal growth parameters." Radiology 1984;152:497-501, regression of menstrual age on HC::

        GA_weeks = 8.96 + 0.540 HC + 0.0003 HC**3      (HC in cm)

    Derived from fetuses of 14-42 weeks (:data:`HADLOCK_GA_RANGE_WEEKS`, HC about 89-358 mm). Returns
    ``None``, never raises, when ``hc_mm`` is not a finite positive number or the estimate falls
    outside that range (no extrapolation); :func:`ga_reason` says why.
    """
    return _estimate(_HADLOCK_HC, hc_mm)[0]


def ga_hadlock_bpd_weeks(bpd_mm: float) -> float | None:
    """Gestational age (weeks) from biparietal diameter (mm), Hadlock 1984; ``None`` out of range.

    Hadlock FP, Deter RL, Harrist RB, Park SK. Radiology 1984;152:497-501 (see
    :func:`ga_hadlock_hc_weeks`), regression of menstrual age on BPD::

        GA_weeks = 9.54 + 1.482 BPD + 0.1676 BPD**2    (BPD in cm)

    BPD-based age is unreliable when the head shape is abnormal (see :func:`cephalic_index`).
    Valid for 14-42 weeks (BPD about 24-102 mm); outside it, or for a length that is not a finite
    positive number, the result is ``None`` (never raises).
    """
    return _estimate(_HADLOCK_BPD, bpd_mm)[0]


def ga_intergrowth_hc_days(hc_mm: float) -> float | None:
    """Gestational age (days) from head circumference (mm), INTERGROWTH-21st dating; ``None`` out of range.

    Papageorghiou AT, Kemp B, Stones W, Ohuma EO, Kennedy SH, Purwar M, et al. "Ultrasound-based
    gestational-age estimation in late pregnancy." Ultrasound Obstet Gynecol 2016;48:719-726
    (doi:10.1002/uog.15894), equation for HC alone (when femur length is not available)::

        ln(GA_days) = 0.05970 (ln HC)**2 + 0.000000006409 HC**3 + 3.3258     (HC in mm)

    Intended for pregnancies without first-trimester dating, scanned at 14+0 to 25+6 weeks
    (:data:`INTERGROWTH_DATING_GA_RANGE_WEEKS`, 98 to 181.99 days). An estimate outside that window, an
    HC under 1 mm (where the equation turns back up) or an HC that is not a finite positive number
    gives ``None`` (never raises).
    """
    weeks = _estimate(_INTERGROWTH_HC, hc_mm)[0]
    return None if weeks is None else weeks * 7.0


def ga_intergrowth_hc_weeks(hc_mm: float) -> float | None:
    """Gestational age (weeks) from head circumference (mm): :func:`ga_intergrowth_hc_days` / 7.

    Papageorghiou AT et al. Ultrasound Obstet Gynecol 2016;48:719-726 (HC-only equation). ``None``
    outside 14+0 to 25+6 weeks or for an HC that is not a finite positive number (never raises).
    """
    return _estimate(_INTERGROWTH_HC, hc_mm)[0]


GaFormula = Literal["hadlock_hc", "hadlock_bpd", "intergrowth_hc"]
_FORMULAS: dict[str, _GaFormula] = {
    "hadlock_hc": _HADLOCK_HC,
    "hadlock_bpd": _HADLOCK_BPD,
    "intergrowth_hc": _INTERGROWTH_HC,
}


def ga_reason(formula: GaFormula, length_mm: float) -> str:
    """Why a GA formula gives ``None`` for ``length_mm`` (mm), or ``""`` when it gives an age.

    ``formula`` is ``"hadlock_hc"``, ``"hadlock_bpd"`` or ``"intergrowth_hc"``. Example:
    ``ga_reason("hadlock_hc", 2400)`` -> ``"HC 2400 mm outside the Hadlock HC range (14-42 weeks, HC
    about 89-358 mm)"``. Never raises for a number; an unknown ``formula`` is a ValueError.
    """
    try:
        f = _FORMULAS[formula]
    except (KeyError, TypeError):
        raise ValueError(f"unknown GA formula {formula!r}; expected one of {sorted(_FORMULAS)}") from None
    return _estimate(f, length_mm)[1]


# --------------------------------------------------------------------------- INTERGROWTH-21st standards


def _hc_mean_sd_mm(ga: float) -> tuple[float, float]:
    lg = math.log(ga)
    mean = -28.2849 + 1.69267 * ga**2 - 0.397485 * ga**2 * lg
    sd = 1.98735 + 0.0136772 * ga**3 - 0.00726264 * ga**3 * lg + 0.000976253 * ga**3 * lg**2
    return mean, sd


def _bpd_mean_sd_mm(ga: float) -> tuple[float, float]:
    lg = math.log(ga)
    mean = 5.60878 + 0.158369 * ga**2 - 0.00256379 * ga**3
    sd = math.exp(0.101242 + 0.00150557 * ga**3 - 0.000771535 * ga**3 * lg + 0.0000999638 * ga**3 * lg**2)
    return mean, sd


def _ofd_mean_sd_mm(ga: float) -> tuple[float, float]:
    lg = math.log(ga)
    mean = -12.4097 + 0.626342 * ga**2 - 0.148075 * ga**2 * lg
    sd = math.exp(-0.880034 + 0.0631165 * ga**2 - 0.0317136 * ga**2 * lg + 0.00408302 * ga**2 * lg**2)
    return mean, sd


_INTERGROWTH = {"hc": _hc_mean_sd_mm, "bpd": _bpd_mean_sd_mm, "ofd": _ofd_mean_sd_mm}


def intergrowth_mean_sd_mm(measure: Measure, ga_weeks: float) -> tuple[float, float]:
    """Mean and SD (mm) of HC, BPD or OFD at ``ga_weeks`` (exact weeks, 14-40 inclusive).

    Papageorghiou AT, Ohuma EO, Altman DG, Todros T, Cheikh Ismail L, Lambert A, et al.
    "International standards for fetal growth based on serial ultrasound measurements: the Fetal
    Growth Longitudinal Study of the INTERGROWTH-21st Project." Lancet 2014;384:869-879: the
    published fractional-polynomial equations for the mean and SD of each measure (GA in exact
    weeks, ln = natural log)::

        HC   mean = -28.2849 + 1.69267 GA^2 - 0.397485 GA^2 ln GA
             SD   = 1.98735 + 0.0136772 GA^3 - 0.00726264 GA^3 ln GA + 0.000976253 GA^3 (ln GA)^2
        BPD  mean = 5.60878 + 0.158369 GA^2 - 0.00256379 GA^3
             SD   = exp(0.101242 + 0.00150557 GA^3 - 0.000771535 GA^3 ln GA
                        + 0.0000999638 GA^3 (ln GA)^2)
        OFD  mean = -12.4097 + 0.626342 GA^2 - 0.148075 GA^2 ln GA
             SD   = exp(-0.880034 + 0.0631165 GA^2 - 0.0317136 GA^2 ln GA
                        + 0.00408302 GA^2 (ln GA)^2)

    They reproduce the INTERGROWTH-21st published z-score tables (mean +/- 1, 2, 3 SD at whole
    weeks 14-40) to the tables' 0.1 mm rounding. The BPD is the outer-to-inner BPD.

    Raises:
        ValueError: for an unknown ``measure`` or a GA outside 14-40 weeks (or not finite).
    """
    try:
        fn = _INTERGROWTH[measure]
    except (KeyError, TypeError):
        raise ValueError(f"unknown measure {measure!r}; expected one of {sorted(_INTERGROWTH)}") from None
    ga = float(ga_weeks)
    lo, hi = INTERGROWTH_GA_RANGE_WEEKS
    if not (lo <= ga <= hi):  # also rejects NaN
        raise ValueError(
            f"ga_weeks must be within {lo:g}-{hi:g} weeks for INTERGROWTH-21st, got {ga_weeks!r}"
        )
    return fn(ga)


def zscore(measure: Measure, value_mm: float, ga_weeks: float) -> float:
    """INTERGROWTH-21st z-score (SD units) of ``value_mm`` at ``ga_weeks``: (value - mean) / SD.

    The standards assume a normal distribution at each GA (Papageorghiou et al., Lancet 2014).

    Raises:
        ValueError: for an unknown measure, a GA outside 14-40 weeks or a non-positive value.
    """
    value = _check_positive("value_mm", value_mm)
    mean, sd = intergrowth_mean_sd_mm(measure, ga_weeks)
    return (value - mean) / sd


def centile(measure: Measure, value_mm: float, ga_weeks: float) -> float:
    """INTERGROWTH-21st centile (0-100) of ``value_mm`` at ``ga_weeks``: 100 Phi(z).

    Phi is the standard normal CDF, 0.5 (1 + erf(z / sqrt 2)); the 3rd and 97th centiles are
    mean -/+ 1.881 SD, as in the published centile tables.

    Raises:
        ValueError: for an unknown measure, a GA outside 14-40 weeks or a non-positive value.
    """
    z = zscore(measure, value_mm, ga_weeks)
    return 50.0 * (1.0 + math.erf(z / math.sqrt(2.0)))


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class Biometry:
    """Head biometry of one scan: lengths in mm, cephalic index in percent, GA in weeks.

    A GA is ``None`` when the estimate falls outside its formula's valid range:
    :data:`HADLOCK_GA_RANGE_WEEKS` (14-42 weeks) for the Hadlock estimates,
    :data:`INTERGROWTH_DATING_GA_RANGE_WEEKS` (14+0 to 25+6 weeks) for the INTERGROWTH-21st HC
    dating equation; ``ga_note`` then says why, one reason per empty GA joined by ``"; "`` (e.g.
    ``"HC 2400 mm outside the Hadlock HC range (14-42 weeks, HC about 89-358 mm)"``). A length that is
    not a finite positive number is ``None`` too. BPD follows :data:`BPD_CONVENTION`.
    """

    bpd_mm: float | None
    ofd_mm: float | None
    hc_mm: float | None
    cephalic_index: float | None
    ga_hadlock_hc_weeks: float | None
    ga_hadlock_bpd_weeks: float | None
    ga_intergrowth_hc_weeks: float | None
    ga_note: str = ""  # why a GA is empty (outside its formula's range), for the output row's ga_note


def _length(name: str, value: float | None) -> tuple[float | None, str]:
    """``(value as float, "")`` for a finite positive length, else ``(None, reason)``."""
    if value is None:
        return None, f"{name} unknown"
    v = float(value)
    if not math.isfinite(v) or v <= 0.0:
        return None, f"{name} {v:g} mm is not a finite positive length"
    return v, ""


def _finite(fn: Callable[[float, float], float], a: float, b: float) -> float | None:
    """``fn(a, b)`` when it is a finite number, else ``None`` (overflow, NaN from inf / inf)."""
    try:
        value = fn(a, b)
    except (ArithmeticError, ValueError):
        return None
    return value if math.isfinite(value) else None


def biometry_from_axes(bpd_mm: float, ofd_mm: float, hc_mm: float | None = None) -> Biometry:
    """All head biometry from the two ellipse axes (mm) and, optionally, a measured HC (mm).

    ``hc_mm`` defaults to the Ramanujan perimeter of the ellipse with semi-axes ``bpd_mm / 2`` and
    ``ofd_mm / 2``. GA estimates outside their formula's valid range are ``None`` and
    :attr:`Biometry.ga_note` says why (see :class:`Biometry`).

    Never raises for numbers, however absurd (1e300, 1e-300, inf, NaN, 0, negative: a length that is
    not a finite positive number becomes ``None`` with its reason in ``ga_note``); a value that is not
    a number at all (a string) is a programming error and raises TypeError or ValueError from
    ``float()``.
    """
    bpd, why_bpd = _length("BPD", bpd_mm)
    ofd, why_ofd = _length("OFD", ofd_mm)
    if hc_mm is not None:
        hc, why_hc = _length("HC", hc_mm)
    elif bpd is not None and ofd is not None:
        hc = _finite(ramanujan_perimeter, bpd / 2.0, ofd / 2.0)
        why_hc = "HC not computable from BPD and OFD (overflow or underflow)"
    else:
        hc, why_hc = None, "HC unknown (no BPD and OFD)"
    ci = _finite(cephalic_index, bpd, ofd) if bpd is not None and ofd is not None else None
    notes = [why for why in (why_bpd, why_ofd) if why]
    estimates: dict[str, float | None] = {}
    for key, formula, length, why_length in (
        ("hadlock_hc", _HADLOCK_HC, hc, why_hc),
        ("hadlock_bpd", _HADLOCK_BPD, bpd, why_bpd),
        ("intergrowth_hc", _INTERGROWTH_HC, hc, why_hc),
    ):
        if length is None:
            estimates[key] = None
            if why_length and why_length not in notes:
                notes.append(why_length)
            continue
        estimates[key], why = _estimate(formula, length)
        if why:
            notes.append(why)
    return Biometry(
        bpd_mm=bpd,
        ofd_mm=ofd,
        hc_mm=hc,
        cephalic_index=ci,
        ga_hadlock_hc_weeks=estimates["hadlock_hc"],
        ga_hadlock_bpd_weeks=estimates["hadlock_bpd"],
        ga_intergrowth_hc_weeks=estimates["intergrowth_hc"],
        ga_note="; ".join(notes),
    )
