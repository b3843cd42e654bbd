"""Realistic customers in the shape of the Olist data set, generated reproducibly from a seed.

States follow Olist's share of customers, zip prefixes come from each state's real CEP ranges
(five-digit prefixes; SP's 01000 is the integer 1000, as Olist stores it), and cities are real
cities of the state. Capitals and the larger cities draw from their own CEP ranges, so a zip-range
query returns the city a Brazilian would expect; the other cities draw from what is left of the
state's ranges.

Olist writes ``customer_city`` in lowercase ASCII ("sao paulo"). Most generated cities have that
form; a few keep their accents or change case ("São Paulo", "SAO PAULO") so that accent- and
case-insensitive search has something to find.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from regionstore_shared.schemas import Customer, fold_text

ZipRange = tuple[int, int]
"""An inclusive range of five-digit zip prefixes."""


@dataclass(frozen=True, slots=True)
class City:
    """A real city, how common it is in its state, and its own CEP prefixes if it has them."""

    name: str
    """Spelled properly, with accents; ``olist_name`` is the form Olist stores."""
    weight: float
    zips: tuple[ZipRange, ...] = ()
    """Empty: the city draws from the state's prefixes that no listed city owns."""
    olist_name: str = field(init=False)
    """Lowercase ASCII, as Olist writes it: 'sao paulo'."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "olist_name", fold_text(self.name))


@dataclass(frozen=True, slots=True)
class State:
    """A Brazilian state (UF): its share of Olist customers, CEP prefixes and main cities."""

    code: str
    share: float
    """Percent of Olist customers living in the state."""
    zips: tuple[ZipRange, ...]
    cities: tuple[City, ...]
    rest: tuple[ZipRange, ...] = field(init=False)
    """The state's prefixes that no listed city owns."""

    def __post_init__(self) -> None:
        owned = sorted(r for city in self.cities for r in city.zips)
        object.__setattr__(self, "rest", _subtract(self.zips, owned))


def _subtract(ranges: tuple[ZipRange, ...], holes: list[ZipRange]) -> tuple[ZipRange, ...]:
    remaining: list[ZipRange] = []
    for low, high in ranges:
        start = low
        for hole_low, hole_high in holes:
            if hole_high < start or hole_low > high:
                continue
            if hole_low > start:
                remaining.append((start, hole_low - 1))
            start = max(start, hole_high + 1)
        if start <= high:
            remaining.append((start, high))
    return tuple(remaining)


def _city(name: str, weight: float, *zips: ZipRange) -> City:
    return City(name, weight, zips)


# Shares: Olist customers per state (percent). City weights: roughly Olist's customers per city,
# so a capital dominates its state as it does in the data. CEP ranges from Correios.
STATES: tuple[State, ...] = (
    State("SP", 42.0, ((1000, 19999),), (
        _city("São Paulo", 15540, (1000, 5999), (8000, 8499)),
        _city("Campinas", 1444, (13000, 13139)),
        _city("Guarulhos", 1189, (7000, 7399)),
        _city("São Bernardo do Campo", 938, (9600, 9899)),
        _city("Santo André", 797, (9000, 9299)),
        _city("Osasco", 746, (6000, 6299)),
        _city("Santos", 713, (11000, 11099)),
        _city("São José dos Campos", 691, (12200, 12248)),
        _city("Sorocaba", 633, (18000, 18109)),
        _city("Jundiaí", 565, (13200, 13219)),
        _city("Ribeirão Preto", 510, (14000, 14114)),
        _city("Barueri", 433, (6400, 6499)),
        _city("Mogi das Cruzes", 383, (8700, 8899)),
        _city("Piracicaba", 330, (13400, 13439)),
        _city("São José do Rio Preto", 320, (15000, 15099)),
        _city("Bauru", 300, (17000, 17099)),
        _city("Taubaté", 280, (12000, 12099)),
        _city("Diadema", 270, (9900, 9999)),
        _city("Carapicuíba", 260, (6300, 6399)),
        _city("Franca", 240, (14400, 14414)),
        _city("Indaiatuba", 220, (13330, 13349)),
        _city("Praia Grande", 210, (11700, 11729)),
        _city("São Carlos", 200, (13560, 13579)),
        _city("Marília", 180, (17500, 17529)),
        _city("Presidente Prudente", 170, (19000, 19099)),
        _city("Santa Bárbara d'Oeste", 150, (13450, 13459)),
    )),
    State("RJ", 12.9, ((20000, 28999),), (
        _city("Rio de Janeiro", 6882, (20000, 23799)),
        _city("Niterói", 849, (24000, 24399)),
        _city("Nova Iguaçu", 435, (26000, 26099)),
        _city("São Gonçalo", 409, (24400, 24799)),
        _city("Duque de Caxias", 370, (25000, 25499)),
        _city("Petrópolis", 300, (25600, 25779)),
        _city("Campos dos Goytacazes", 280, (28000, 28099)),
        _city("Volta Redonda", 260, (27200, 27299)),
        _city("São João de Meriti", 200, (25500, 25599)),
        _city("Macaé", 190, (27900, 27999)),
        _city("Belford Roxo", 170, (26100, 26199)),
        _city("Nova Friburgo", 170),
        _city("Teresópolis", 160),
        _city("Cabo Frio", 150),
        _city("Resende", 130),
        _city("Angra dos Reis", 120),
    )),
    State("ES", 2.0, ((29000, 29999),), (
        _city("Vila Velha", 450, (29100, 29129)),
        _city("Serra", 380, (29160, 29184)),
        _city("Vitória", 375, (29000, 29099)),
        _city("Cariacica", 200, (29140, 29159)),
        _city("Cachoeiro de Itapemirim", 130),
        _city("Guarapari", 120),
        _city("Linhares", 100),
        _city("Colatina", 90),
        _city("São Mateus", 60),
        _city("Aracruz", 60),
    )),
    State("MG", 11.7, ((30000, 39999),), (
        _city("Belo Horizonte", 2773, (30000, 31999)),
        _city("Juiz de Fora", 428, (36000, 36099)),
        _city("Contagem", 411, (32000, 32399)),
        _city("Uberlândia", 400, (38400, 38419)),
        _city("Betim", 250, (32600, 32699)),
        _city("Montes Claros", 200),
        _city("Uberaba", 190),
        _city("Governador Valadares", 170),
        _city("Ipatinga", 160),
        _city("Divinópolis", 150),
        _city("Sete Lagoas", 140),
        _city("Poços de Caldas", 140),
        _city("Varginha", 120),
        _city("Pouso Alegre", 110),
        _city("Itajubá", 90),
        _city("Lavras", 90),
        _city("Timóteo", 60),
    )),
    State("BA", 3.4, ((40000, 48999),), (
        _city("Salvador", 1245, (40000, 42499)),
        _city("Feira de Santana", 200, (44000, 44099)),
        _city("Vitória da Conquista", 170, (45000, 45099)),
        _city("Lauro de Freitas", 160, (42700, 42709)),
        _city("Camaçari", 110),
        _city("Itabuna", 100),
        _city("Ilhéus", 90),
        _city("Juazeiro", 80),
        _city("Jequié", 70),
        _city("Barreiras", 70),
        _city("Teixeira de Freitas", 70),
        _city("Porto Seguro", 70),
        _city("Alagoinhas", 60),
    )),
    State("SE", 0.35, ((49000, 49999),), (
        _city("Aracaju", 220, (49000, 49098)),
        _city("Nossa Senhora do Socorro", 30),
        _city("Lagarto", 20),
        _city("Itabaiana", 20),
        _city("São Cristóvão", 15),
        _city("Estância", 15),
    )),
    State("PE", 1.7, ((50000, 56999),), (
        _city("Recife", 613, (50000, 52999)),
        _city("Jaboatão dos Guararapes", 200, (54000, 54499)),
        _city("Olinda", 150, (53000, 53399)),
        _city("Paulista", 100, (53400, 53499)),
        _city("Caruaru", 100, (55000, 55099)),
        _city("Petrolina", 100, (56300, 56339)),
        _city("Cabo de Santo Agostinho", 50),
        _city("Camaragibe", 50),
        _city("Garanhuns", 50),
        _city("Vitória de Santo Antão", 40),
    )),
    State("AL", 0.42, ((57000, 57999),), (
        _city("Maceió", 250, (57000, 57099)),
        _city("Arapiraca", 50),
        _city("Rio Largo", 20),
        _city("Palmeira dos Índios", 15),
        _city("Penedo", 12),
        _city("União dos Palmares", 10),
    )),
    State("PB", 0.54, ((58000, 58999),), (
        _city("João Pessoa", 300, (58000, 58099)),
        _city("Campina Grande", 100, (58400, 58449)),
        _city("Patos", 25),
        _city("Santa Rita", 20),
        _city("Cabedelo", 20),
        _city("Bayeux", 15),
        _city("Sousa", 15),
    )),
    State("RN", 0.49, ((59000, 59999),), (
        _city("Natal", 250, (59000, 59139)),
        _city("Mossoró", 70, (59600, 59649)),
        _city("Parnamirim", 70, (59140, 59161)),
        _city("São Gonçalo do Amarante", 15),
        _city("Caicó", 15),
        _city("Macaíba", 12),
    )),
    State("CE", 1.3, ((60000, 63999),), (
        _city("Fortaleza", 654, (60000, 61599)),
        _city("Caucaia", 60, (61600, 61699)),
        _city("Juazeiro do Norte", 60, (63000, 63059)),
        _city("Maracanaú", 50, (61900, 61939)),
        _city("Sobral", 50, (62000, 62119)),
        _city("Crato", 30),
        _city("Itapipoca", 20),
        _city("Iguatu", 20),
        _city("Quixadá", 15),
    )),
    State("PI", 0.50, ((64000, 64999),), (
        _city("Teresina", 300, (64000, 64099)),
        _city("Parnaíba", 40, (64200, 64219)),
        _city("Picos", 30),
        _city("Piripiri", 20),
        _city("Floriano", 20),
        _city("Campo Maior", 15),
    )),
    State("MA", 0.75, ((65000, 65999),), (
        _city("São Luís", 350, (65000, 65109)),
        _city("Imperatriz", 90, (65900, 65919)),
        _city("São José de Ribamar", 40),
        _city("Timon", 40),
        _city("Caxias", 30),
        _city("Codó", 20),
        _city("Bacabal", 20),
        _city("Balsas", 20),
    )),
    State("PA", 1.0, ((66000, 68899),), (
        _city("Belém", 445, (66000, 66999)),
        _city("Ananindeua", 120, (67000, 67199)),
        _city("Santarém", 60, (68000, 68109)),
        _city("Marabá", 50, (68500, 68514)),
        _city("Castanhal", 40),
        _city("Parauapebas", 40),
        _city("Abaetetuba", 20),
        _city("Altamira", 20),
        _city("Bragança", 15),
        _city("Cametá", 10),
    )),
    State("AP", 0.07, ((68900, 68999),), (
        _city("Macapá", 50, (68900, 68914)),
        _city("Santana", 12),
        _city("Laranjal do Jari", 3),
        _city("Oiapoque", 2),
    )),
    State("AM", 0.15, ((69000, 69299), (69400, 69899)), (
        _city("Manaus", 130, (69000, 69099)),
        _city("Parintins", 5),
        _city("Itacoatiara", 5),
        _city("Manacapuru", 5),
        _city("Tefé", 3),
        _city("Coari", 3),
    )),
    State("RR", 0.05, ((69300, 69399),), (
        _city("Boa Vista", 40, (69300, 69339)),
        _city("Rorainópolis", 3),
        _city("Caracaraí", 2),
    )),
    State("AC", 0.08, ((69900, 69999),), (
        _city("Rio Branco", 65, (69900, 69923)),
        _city("Cruzeiro do Sul", 10),
        _city("Sena Madureira", 3),
        _city("Tarauacá", 2),
    )),
    # The brief's DF 70000-73699 and GO 72800-76799 overlap; Correios resolves it as below:
    # 72800-72999 (Luziânia, Valparaíso...) is GO, 73000-73699 (Sobradinho, Planaltina) is DF.
    State("DF", 2.2, ((70000, 72799), (73000, 73699)), (
        _city("Brasília", 2000),
        _city("Taguatinga", 40),
        _city("Ceilândia", 30),
        _city("Gama", 25),
        _city("Sobradinho", 25),
        _city("Guará", 25),
        _city("Águas Claras", 20),
        _city("Samambaia", 15),
        _city("Planaltina", 15),
    )),
    State("GO", 2.0, ((72800, 72999), (73700, 76799)), (
        _city("Goiânia", 692, (74000, 74899)),
        _city("Aparecida de Goiânia", 150, (74900, 74999)),
        _city("Anápolis", 140, (75000, 75159)),
        _city("Rio Verde", 70, (75900, 75909)),
        _city("Valparaíso de Goiás", 40),
        _city("Luziânia", 40),
        _city("Catalão", 40),
        _city("Águas Lindas de Goiás", 35),
        _city("Trindade", 35),
        _city("Formosa", 35),
        _city("Itumbiara", 35),
        _city("Jataí", 35),
        _city("Senador Canedo", 30),
    )),
    State("RO", 0.25, ((76800, 76999),), (
        _city("Porto Velho", 100, (76800, 76834)),
        _city("Ji-Paraná", 40),
        _city("Ariquemes", 30),
        _city("Vilhena", 30),
        _city("Cacoal", 30),
        _city("Rolim de Moura", 15),
    )),
    State("TO", 0.28, ((77000, 77999),), (
        _city("Palmas", 120, (77000, 77270)),
        _city("Araguaína", 60),
        _city("Gurupi", 45),
        _city("Porto Nacional", 20),
        _city("Paraíso do Tocantins", 20),
    )),
    # 78900-78999 belongs to no state in the brief's table, so nothing is generated there.
    State("MT", 0.9, ((78000, 78899),), (
        _city("Cuiabá", 300, (78000, 78109)),
        _city("Várzea Grande", 100, (78110, 78159)),
        _city("Rondonópolis", 90, (78700, 78759)),
        _city("Sinop", 70, (78550, 78559)),
        _city("Tangará da Serra", 40),
        _city("Sorriso", 40),
        _city("Lucas do Rio Verde", 35),
        _city("Primavera do Leste", 35),
        _city("Cáceres", 30),
        _city("Barra do Garças", 30),
    )),
    State("MS", 0.72, ((79000, 79999),), (
        _city("Campo Grande", 400, (79000, 79124)),
        _city("Dourados", 90, (79800, 79849)),
        _city("Três Lagoas", 60, (79600, 79644)),
        _city("Corumbá", 40, (79300, 79339)),
        _city("Ponta Porã", 30),
        _city("Naviraí", 20),
        _city("Nova Andradina", 20),
        _city("Aquidauana", 15),
    )),
    State("PR", 5.1, ((80000, 87999),), (
        _city("Curitiba", 1521, (80000, 82999)),
        _city("Londrina", 400, (86000, 86099)),
        _city("Maringá", 350, (87000, 87099)),
        _city("Ponta Grossa", 200, (84000, 84099)),
        _city("Cascavel", 180, (85800, 85824)),
        _city("São José dos Pinhais", 180, (83000, 83129)),
        _city("Foz do Iguaçu", 150, (85850, 85874)),
        _city("Colombo", 120, (83400, 83414)),
        _city("Guarapuava", 100),
        _city("Toledo", 90),
        _city("Paranaguá", 80),
        _city("Pinhais", 80),
        _city("Apucarana", 70),
        _city("Campo Largo", 70),
        _city("Arapongas", 60),
    )),
    State("SC", 3.7, ((88000, 89999),), (
        _city("Florianópolis", 570, (88000, 88099)),
        _city("Joinville", 450, (89200, 89239)),
        _city("Blumenau", 400, (89000, 89099)),
        _city("São José", 300, (88100, 88124)),
        _city("Itajaí", 200, (88300, 88319)),
        _city("Balneário Camboriú", 180, (88330, 88339)),
        _city("Criciúma", 180, (88800, 88819)),
        _city("Chapecó", 170, (89800, 89816)),
        _city("Palhoça", 150, (88130, 88139)),
        _city("Jaraguá do Sul", 150, (89250, 89270)),
        _city("Lages", 100),
        _city("Brusque", 100),
        _city("Tubarão", 80),
    )),
    State("RS", 5.5, ((90000, 99999),), (
        _city("Porto Alegre", 1379, (90000, 91999)),
        _city("Caxias do Sul", 350, (95000, 95129)),
        _city("Canoas", 300, (92000, 92479)),
        _city("Pelotas", 250, (96000, 96099)),
        _city("Santa Maria", 250, (97000, 97119)),
        _city("Novo Hamburgo", 200, (93300, 93599)),
        _city("Gravataí", 180, (94000, 94199)),
        _city("São Leopoldo", 160, (93000, 93199)),
        _city("Viamão", 150, (94400, 94799)),
        _city("Passo Fundo", 150, (99000, 99099)),
        _city("Rio Grande", 120),
        _city("Alvorada", 100),
        _city("Santa Cruz do Sul", 100),
        _city("Bento Gonçalves", 100),
        _city("Santa Rosa", 70),
    )),
)  # fmt: skip

STATE_BY_CODE: dict[str, State] = {state.code: state for state in STATES}

REPEAT_CUSTOMER_RATE = 0.034
"""Olist: 99,441 customer ids for 96,096 people, so ~3.4% of orders come from a returning person."""

_RECENT_PEOPLE = 1024
_ACCENTED_RATE = 0.06
_CASE_VARIANT_RATE = 0.04


def state_of_zip(zip_prefix: int) -> str | None:
    """The UF whose CEP ranges hold ``zip_prefix``, or None."""
    for state in STATES:
        if any(low <= zip_prefix <= high for low, high in state.zips):
            return state.code
    return None


class _Ranges:
    """Draws uniformly from a set of zip ranges, each prefix equally likely."""

    def __init__(self, ranges: tuple[ZipRange, ...]) -> None:
        self._ranges = ranges
        self._ends = list(itertools.accumulate(high - low + 1 for low, high in ranges))

    def draw(self, rng: random.Random) -> int:
        offset = rng.randrange(self._ends[-1])
        index = bisect.bisect_right(self._ends, offset)
        low = self._ranges[index][0]
        return low + offset - (self._ends[index - 1] if index else 0)


class _Places:
    """Precomputed draws: a state by Olist share, then a city by weight, then a zip of that city."""

    def __init__(self) -> None:
        self._states = STATES
        self._state_weights = list(itertools.accumulate(s.share for s in STATES))
        self._cities = {
            s.code: (s.cities, list(itertools.accumulate(c.weight for c in s.cities)))
            for s in STATES
        }
        self._zips = {(s.code, c.name): _Ranges(c.zips or s.rest) for s in STATES for c in s.cities}

    def draw(self, rng: random.Random) -> tuple[State, City, int]:
        (state,) = rng.choices(self._states, cum_weights=self._state_weights)
        cities, weights = self._cities[state.code]
        (city,) = rng.choices(cities, cum_weights=weights)
        return state, city, self._zips[state.code, city.name].draw(rng)


def _spelling(city: City, rng: random.Random) -> str:
    roll = rng.random()
    if roll < _ACCENTED_RATE:
        return city.name if rng.random() < 0.7 else city.name.lower()
    if roll < _ACCENTED_RATE + _CASE_VARIANT_RATE:
        return city.olist_name.upper() if rng.random() < 0.5 else city.olist_name.title()
    return city.olist_name


def _hex32(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def generate(n: int, *, seed: int = 0) -> Iterator[Customer]:
    """``n`` customers, lazily; the same ``seed`` always yields the same customers.

    About 3.4% are a returning person: a new ``customer_id`` with the ``customer_unique_id``
    and address of a customer generated shortly before, as in Olist.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    places = _Places()
    recent: list[tuple[str, int, str, str]] = []
    for _ in range(n):
        if recent and rng.random() < REPEAT_CUSTOMER_RATE:
            unique_id, zip_prefix, city, state_code = rng.choice(recent)
        else:
            state, place, zip_prefix = places.draw(rng)
            unique_id, city, state_code = _hex32(rng), _spelling(place, rng), state.code
            if len(recent) < _RECENT_PEOPLE:
                recent.append((unique_id, zip_prefix, city, state_code))
            else:
                recent[rng.randrange(_RECENT_PEOPLE)] = (unique_id, zip_prefix, city, state_code)
        yield Customer(
            customer_id=_hex32(rng),
            customer_unique_id=unique_id,
            customer_zip_code_prefix=zip_prefix,
            customer_city=city,
            customer_state=state_code,
        )
