"""The report's files: JSON (the model as is), CSV (its rows) and HTML (a Jinja2 template).

The HTML is one self-contained file: inline CSS and SVG, no script, no font, no image, no link
to anything, so it opens anywhere and prints on A4 (print CSS). French by default, English on
request; numbers, dates and units follow the language. Table cells carry their raw figure in
`data-value`, so a test (or a reader's script) finds the CSV's numbers in the page.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from functools import cache
from typing import Any

import jinja2
import msgspec
from markupsafe import Markup

from tice_collector.report import svg
from tice_collector.report.compute import ALL, kind_order
from tice_collector.report.model import CSV_COLUMNS, Row, UsageReport

NNBSP = "\u202f"  # French puts a narrow no-break space before % and between thousands


def to_json(report: UsageReport) -> bytes:
    return msgspec.json.encode(report) + b"\n"


def csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_csv(report: UsageReport) -> bytes:
    """The rows, one line each, columns CSV_COLUMNS (docs/report.md), RFC 4180, UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report.rows:
        writer.writerow([csv_value(v) for v in msgspec.structs.astuple(row)])
    return out.getvalue().encode("utf-8")


# ---------------------------------------------------------------- language

MONTHS = {
    "fr": ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"),
    "en": ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"),
}
SHORT_MONTHS = {
    "fr": ("janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.", "déc."),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}

# Each message in French, then English. {name} fields are filled by the template.
MESSAGES: dict[str, tuple[str, str]] = {
    "title": ("Utilisation des équipements numériques des écoles", "Use of the schools' digital equipment"),
    "city": ("Ensemble des écoles", "All schools"),
    "period": ("Période du {start} au {end}", "Period from {start} to {end}"),
    "default_term": ("la période de classe en cours, jusqu'à hier (pendant les vacances, la dernière)",
                     "the current school term up to yesterday (or the last term, during a break)"),
    "generated": ("Établi le {when}", "Made on {when}"),
    "school_days_in_period": ("{n} jours de classe", "{n} school days"),
    "key_used": ("équipements utilisés en classe", "of devices used in class"),
    "key_used_of": ("{used} sur {devices}, au moins un jour de classe",
                    "{used} of {devices}, on one school day or more"),
    "key_regular": ("utilisés régulièrement", "used regularly"),
    "key_regular_of": ("{regular} des {judged} équipements jugés", "{regular} of the {judged} devices judged"),
    "key_classes": ("classes régulières", "regular classes"),
    "key_classes_of": ("sur {classes} classes ayant un équipement jugé", "of {classes} classes with a judged device"),
    "key_minutes": ("min par jour de classe", "min per school day"),
    "key_minutes_of": ("médiane par équipement, en classe", "median per device, in class"),
    "coverage": ("Couverture des données : sur {device_days} journées-équipement de classe, {no_data} n'ont aucune "
                 "donnée ({share}) : l'équipement était éteint ou ses données ne sont pas arrivées. Une journée "
                 "sans donnée compte comme non utilisée.",
                 "Data coverage: of {device_days} school device-days, {no_data} have no data ({share}): the device "
                 "was off or its data did not arrive. A day without data counts as not used."),
    "coverage_never": ("{n} équipements de l'inventaire n'ont jamais été inscrits (pas d'agent) : aucune donnée "
                       "n'en est attendue, ils comptent comme non utilisés.",
                       "{n} inventory devices were never enrolled (no agent): no data is expected from them, and "
                       "they count as not used."),
    "trend": ("Évolution par semaine", "Week by week"),
    "trend_chart": ("Part des équipements utilisés en classe chaque semaine",
                    "Share of devices used in class each week"),
    "trend_axis": ("semaine du (lundi)", "week of (Monday)"),
    "trend_note": ("Une semaine sans jour de classe (vacances) n'a pas de point.",
                   "A week without a school day (a break) has no point."),
    "week": ("Semaine du", "Week of"),
    "by_school": ("Par école", "By school"),
    "schools_chart": ("Part des équipements jugés utilisés régulièrement, par école",
                      "Share of judged devices used regularly, by school"),
    "none_judged": ("aucun équipement jugé", "no device judged"),
    "by_kind": ("Par type d'équipement", "By kind of device"),
    "school": ("École", "School"),
    "kind": ("Type", "Kind"),
    "school_days": ("Jours de classe", "School days"),
    "devices": ("Équipements", "Devices"),
    "used": ("Utilisés", "Used"),
    "judged": ("Jugés", "Judged"),
    "regular": ("Réguliers", "Regular"),
    "too_new": ("Trop récents", "Too new"),
    "classes_regular": ("Classes régulières", "Regular classes"),
    "minutes": ("Min/jour (médiane)", "Min/day (median)"),
    "cupboard_n": ("Au placard", "In the cupboard"),
    "silent_n": ("Silencieux", "Silent"),
    "no_data": ("Sans donnée", "No data"),
    "zone_timetable": ("Zone {zone}, {timetable}, {days} jours de classe",
                       "Zone {zone}, {timetable}, {days} school days"),
    "four_day": ("semaine de 4 jours", "four-day week"),
    "wednesday_morning": ("mercredi matin travaillé", "Wednesday mornings taught"),
    "cupboard": ("Au placard : jamais utilisés en classe sur la période",
                 "In the cupboard: never used in class in the period"),
    "asset_tag": ("N° d'inventaire", "Asset tag"),
    "class": ("Classe", "Class"),
    "reason": ("Pourquoi", "Why"),
    "last_data": ("Dernière donnée", "Last data"),
    "days_with_data": ("Jours avec données", "Days with data"),
    "never_enrolled": ("jamais inscrit (pas d'agent)", "never enrolled (no agent)"),
    "no_data_reason": ("aucune donnée : éteint ou ne remonte rien", "no data: off, or not reporting"),
    "not_used_in_class": ("remonte des données, jamais utilisé en classe", "reports, never used in class"),
    "silent": ("Silencieux en fin de période", "Silent at the end of the period"),
    "missed": ("Jours de classe sans donnée", "School days without data"),
    "silent_school": ("Aucun équipement de l'école n'a remonté de données sur ses {n} derniers jours de classe : "
                      "panne de réseau ou de courant probable.",
                      "No device of the school reported on its last {n} school days: a network or power failure "
                      "is likely."),
    "modems": ("Données 3G par clé", "3G data per key"),
    "counted_on": ("Compté sur", "Counted on"),
    "host": ("l'ordinateur hôte", "the host computer"),
    "key": ("la clé", "the key"),
    "projector_self": ("le vidéoprojecteur", "the projector"),
    "data_total": ("Données (tous jours)", "Data (every day)"),
    "data_in_class": ("Dont en classe", "Of which in class"),
    "used_days": ("Jours utilisés", "Days used"),
    "projectors": ("Vidéoprojecteurs : heures d'allumage", "Projectors: hours on"),
    "on_hours": ("Heures allumé (tous jours)", "Hours on (every day)"),
    "on_in_class": ("Dont en classe", "Of which in class"),
    "none": ("Aucun.", "None."),
    "method": ("Méthode", "Method"),
    "method_used": ("Un équipement est <em>utilisé</em> un jour de classe quand son activité pendant les heures de "
                    "classe atteint {threshold} : temps actif pour un ordinateur ; lampe allumée ou écran externe "
                    "(le plus long des deux) pour un vidéoprojecteur ; au moins {bytes} échangés pour une clé 3G.",
                    "A device is <em>used</em> on a school day when its activity inside teaching hours reaches "
                    "{threshold}: active time for a computer; lamp on or external display (the longer) for a "
                    "projector; at least {bytes} carried for a 3G key."),
    "method_regular": ("Il est <em>utilisé régulièrement</em> quand il a été utilisé au moins {share} des jours de "
                       "classe de la période depuis son inscription. Avec moins de {min} jours, il est <em>trop "
                       "récent</em> et n'est pas jugé. (Les alertes appliquent la même règle aux {window} derniers "
                       "jours de classe.)",
                       "It is <em>used regularly</em> when it was used on at least {share} of the period's school "
                       "days since its enrolment. With fewer than {min} such days it is <em>too new</em> and not "
                       "judged. (The alerts apply the same rule to the last {window} school days.)"),
    "method_class": ("Une classe est <em>régulière</em> quand au moins {share} de ses équipements jugés sont "
                     "utilisés régulièrement.",
                     "A class is <em>regular</em> when at least {share} of its judged devices are used regularly."),
    "method_silent": ("Un équipement est <em>silencieux</em> quand rien n'est arrivé de lui pendant au moins les {n} "
                      "derniers jours de classe de la période, alors que d'autres équipements de son école ont "
                      "remonté des données.",
                      "A device is <em>silent</em> when nothing arrived from it on at least the last {n} school "
                      "days of the period while other devices of its school reported."),
    "method_minutes": ("Minutes par jour de classe : pour chaque équipement inscrit (hors clés 3G), ses minutes "
                       "d'utilisation en classe divisées par ses jours de classe de la période ; la médiane de ces "
                       "valeurs.",
                       "Minutes per school day: for each enrolled device (3G keys aside), its minutes of use in "
                       "class over its school days of the period; the median of those values."),
    "method_hours": ("Heures de classe (heure locale, {tz}) : {hours} ; le mercredi des écoles au mercredi matin "
                     "travaillé : {wednesday}.",
                     "Teaching hours (local time, {tz}): {hours}; on Wednesdays at schools that teach Wednesday "
                     "mornings: {wednesday}."),
    "method_own_hours": ("Écoles ayant leurs propres horaires : {schools}.",
                         "Schools with their own hours: {schools}."),
    "method_calendar": ("Calendrier : les jours de classe de chaque école (semaine de 4 jours ou mercredi matin "
                        "travaillé), moins les jours fériés et les vacances scolaires de sa zone (données "
                        "officielles embarquées), corrigés par les fermetures et ouvertures saisies. La période par "
                        "défaut est la période de classe en cours : les jours de classe entre deux vacances (au moins "
                        "{n} jours sans classe).",
                        "Calendar: each school's teaching days (four-day week, or Wednesday mornings too), minus "
                        "public holidays and its zone's school holidays (official data, bundled), corrected by the "
                        "closures and make-up days entered. The default period is the current term: the school "
                        "days between two breaks (at least {n} days without class)."),
    "method_counted": ("Comptés : les équipements non retirés, à l'inventaire à la fin de la période ; les disques "
                       "de sauvegarde sont suivis pour leur santé, pas pour leur usage. Un équipement jamais "
                       "inscrit (sans agent) compte comme non utilisé.",
                       "Counted: devices not retired, in the inventory at the end of the period; backup disks are "
                       "watched for health, not use. A device never enrolled (no agent) counts as not used."),
    "method_sources": ("Les chiffres viennent des totaux quotidiens par équipement. Les octets 3G et le temps "
                       "d'allumage des vidéoprojecteurs sont comptés sur l'équipement indiqué (« compté sur »).",
                       "The figures come from the daily totals per device. 3G bytes and projector on-time are "
                       "counted on the device shown (\u201ccounted on\u201d)."),
    "calendar_table": ("Calendrier de chaque école", "Each school's calendar"),
    "zone": ("Zone", "Zone"),
    "timetable": ("Semaine", "Week"),
    "own_hours": ("Horaires propres", "Own hours"),
    "overrides": ("Fermetures / ouvertures", "Closures / make-up days"),
    "holiday_data": ("Données de vacances", "Holiday data"),
    "yes": ("oui", "yes"),
    "no": ("non", "no"),
    "holiday_missing": ("absentes : jours de classe estimés sans les vacances ; importez le calendrier officiel",
                        "missing: school days guessed without the holidays; import the official calendar"),
    "privacy": ("Les équipements sont désignés par leur numéro d'inventaire et leur classe, jamais par une personne.",
                "Devices are named by asset tag and class, never by a person."),
}
KIND_NAMES: dict[str, tuple[str, str]] = {
    ALL: ("Tous équipements", "All devices"),
    "chromebook": ("Chromebooks", "Chromebooks"),
    "laptop": ("Ordinateurs portables", "Laptops"),
    "desktop": ("Ordinateurs fixes", "Desktops"),
    "other": ("Autres ordinateurs", "Other computers"),
    "projector": ("Vidéoprojecteurs", "Projectors"),
    "modem": ("Clés 3G", "3G keys"),
}
# One device of a kind, for the lists.
KIND_NAME: dict[str, tuple[str, str]] = {
    "chromebook": ("Chromebook", "Chromebook"),
    "laptop": ("Ordinateur portable", "Laptop"),
    "desktop": ("Ordinateur fixe", "Desktop"),
    "other": ("Autre ordinateur", "Other computer"),
    "projector": ("Vidéoprojecteur", "Projector"),
    "modem": ("Clé 3G", "3G key"),
}
KIND_STYLES = {
    "chromebook": svg.Style(svg.BLUE, "circle", ""),
    "laptop": svg.Style(svg.VERMILLION, "square", "7 3"),
    "desktop": svg.Style(svg.GREEN, "triangle", "2 3"),
    "other": svg.Style(svg.PURPLE, "diamond", "9 3 2 3"),
    "projector": svg.Style(svg.ORANGE, "cross", "12 4"),
    "modem": svg.Style(svg.BLACK, "down", "1 3"),
}


class Lang:
    """Words, numbers and dates in one language ("fr" or "en")."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.index = 0 if code == "fr" else 1

    def t(self, key: str, **fields: Any) -> str:
        text = MESSAGES[key][self.index]
        return text.format(**fields) if fields else text

    def kind(self, kind: str) -> str:
        return KIND_NAMES.get(kind, (kind, kind))[self.index]

    def one(self, kind: str) -> str:
        return KIND_NAME.get(kind, (kind, kind))[self.index]

    def number(self, n: int | float) -> str:
        text = f"{n:,}" if isinstance(n, int) else f"{n:,.1f}"
        if self.code == "fr":
            return text.replace(",", NNBSP).replace(".", ",")
        return text

    def decimal(self, x: float | None, digits: int = 1) -> str:
        if x is None:
            return "–"
        text = f"{x:,.{digits}f}"
        return text.replace(",", NNBSP).replace(".", ",") if self.code == "fr" else text

    def percent(self, x: float | None) -> str:
        if x is None:
            return "–"
        value = round(x * 100)
        return f"{value}{NNBSP}%" if self.code == "fr" else f"{value}%"

    def day(self, d: date | None) -> str:
        if d is None:
            return "–"
        month = MONTHS[self.code][d.month - 1]
        return f"{d.day} {month} {d.year}"

    def short_date(self, d: date) -> str:
        return f"{d.day} {SHORT_MONTHS[self.code][d.month - 1]}"

    def data_size(self, n: int) -> str:
        """Bytes in decimal units, as operators bill them (Mo/Go in French)."""
        units = ("o", "ko", "Mo", "Go", "To") if self.code == "fr" else ("B", "kB", "MB", "GB", "TB")
        value, unit = float(n), 0
        while value >= 1000 and unit < len(units) - 1:
            value, unit = value / 1000, unit + 1
        space = NNBSP if self.code == "fr" else " "
        if unit == 0:
            return f"{n}{space}{units[0]}"
        return f"{self.decimal(value, 1 if value < 10 else 0)}{space}{units[unit]}"

    def exact_bytes(self, n: int) -> str:
        return f"{self.number(n)} {'octets' if self.code == 'fr' else 'bytes'}"

    def duration(self, seconds: float) -> str:
        minutes = seconds / 60
        if minutes < 60 or minutes % 60:
            return f"{self.decimal(minutes, 0)} min"
        return f"{self.decimal(minutes / 60, 0)} h"


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("tice_collector.report", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def trend_chart(rows: list[Row], lang: Lang, *, width: int = 720, height: int = 300) -> str:
    """The weekly share of devices used, one line per kind, from the week rows given (one scope)."""
    weeks = sorted({r.week for r in rows if r.week is not None})
    kinds = sorted({r.kind for r in rows if r.kind != ALL}, key=kind_order)
    by = {(r.kind, r.week): r.used_share for r in rows}
    series = [svg.Series(lang.kind(k), [by.get((k, w)) for w in weeks], KIND_STYLES.get(k, KIND_STYLES["other"]))
              for k in kinds]
    return svg.line_chart(series, [lang.short_date(w) for w in weeks], title=lang.t("trend_chart"),
                          y_label=lang.t("trend_axis"), percent=lang.percent, width=width, height=height)


def to_html(report: UsageReport, lang_code: str = "fr") -> bytes:
    lang = Lang(lang_code)
    period_rows = [r for r in report.rows if r.week is None]
    week_rows = [r for r in report.rows if r.week is not None]
    top_scope = "" if report.scope == "city" else report.scope
    top = [r for r in period_rows if r.school == top_scope]
    schools = {s.uai: s for s in report.schools}

    def school_rows(uai: str) -> list[Row]:
        return [r for r in period_rows if r.school == uai]

    def by_school(items: list[Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {uai: [] for uai in schools}
        for item in items:
            out.setdefault(item.school, []).append(item)
        return out

    bars = [(f"{s.name} ({s.uai})", next((r.regular_share for r in period_rows if r.school == s.uai and r.kind == ALL),
                                         None)) for s in report.schools]
    template = environment().get_template("report.html.j2")
    html = template.render(
        r=report, lang=lang, t=lang.t, top=top, top_all=next(r for r in top if r.kind == ALL),
        city=report.scope == "city", period_rows=period_rows,
        top_weeks=[r for r in week_rows if r.school == top_scope],
        school_rows=school_rows, schools=schools,
        cupboard=by_school(report.cupboard), silent=by_school(report.silent_devices),
        silent_schools={s.school for s in report.silent_schools},
        modems=by_school(report.modems), projectors=by_school(report.projectors),
        trend=Markup(trend_chart([r for r in week_rows if r.school == top_scope], lang)),
        school_trend=lambda uai: Markup(trend_chart([r for r in week_rows if r.school == uai], lang, height=240)),
        schools_chart=Markup(svg.bar_chart(bars, title=lang.t("schools_chart"), percent=lang.percent,
                                           missing=lang.t("none_judged"))),
        own_hours=[s.uai for s in report.schools if s.own_hours], ALL=ALL, raw=csv_value)
    return html.encode("utf-8")
