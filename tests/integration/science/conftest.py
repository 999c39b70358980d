"""What the science tests of the planted circuit share."""

import pytest
from chains import add_control_model, data_folder, explained_store


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory):
    """The planted circuit's explained store with the control model run through the same steps beside it: (planted
    circuit, store, planted model id, control model id, control circuit)."""
    folder = tmp_path_factory.mktemp("planted")
    circuit, store = explained_store(folder)
    with data_folder(folder):
        planted_id = store.query("SELECT model_id FROM models")["model_id"][0]
        control, control_id = add_control_model(folder)
    return circuit, store, planted_id, control_id, control
