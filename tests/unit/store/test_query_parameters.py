"""How `--param` values are typed: the named queries' numeric parameters become numbers, every other stays text,
so that a token such as '42' or ' 1990' reaches the query as the string it is (the queries run on a real store:
tests/integration/reliability/test_query_inputs.py)."""

import pytest

from lookups.pipeline.store import queries
from lookups.pipeline.store.queries import NUMERIC_PARAMETERS, TEXT_PARAMETERS, QueryError
from lookups.pipeline.store.sql_files import named_queries


def test_every_named_query_parameter_is_known_to_be_a_number_or_text():
    used = {name for sql in named_queries().values() for name in queries.PARAMETER.findall(sql)}
    assert not set(NUMERIC_PARAMETERS) & TEXT_PARAMETERS
    unknown = used - set(NUMERIC_PARAMETERS) - TEXT_PARAMETERS
    assert not unknown, f"add {sorted(unknown)} to NUMERIC_PARAMETERS or TEXT_PARAMETERS in pipeline/store/queries.py"


@pytest.mark.parametrize("name, given, typed", [
    ("token", "42", "42"), ("token", "nan", "nan"), ("context_token", " 1990", " 1990"), ("model_id", "7", "7"),
    ("anything_else", "3.5", "3.5"), ("layer", "27", 27), ("head", " 3 ", 3), ("limit", 5, 5),
])
def test_parameters_are_typed_by_name(name, given, typed):
    assert queries._typed(name, given) == typed and type(queries._typed(name, given)) is type(typed)


@pytest.mark.parametrize("value", ["abc", "1.5", "nan", "", "1e3"])
def test_a_numeric_parameter_that_is_not_a_whole_number_is_one_line(value):
    with pytest.raises(QueryError, match=r"^--param layer=.*\$layer is a whole number") as refused:
        queries._typed("layer", value)
    assert "\n" not in str(refused.value)
