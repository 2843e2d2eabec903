"""Structured output and forced tool calls from the emulator, read back by the real SDKs'
own parsers (``chat.completions.parse``, ``responses.parse``, genai's ``parsed``,
anthropic's ``messages.parse``) and checked with ``jsonschema``."""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

import anthropic
import jsonschema
import openai
import pytest
from google import genai
from google.genai import types
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from flexroute.emulator.schema_fill import SchemaError, instance
from flexroute.testing import RunningEmulator

MESSAGES: Any = [{"role": "user", "content": "Describe a city."}]
GEMINI = "gemini-2.5-flash"
CLAUDE = "claude-haiku-4-5"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(BaseModel):
    street: str
    number: int = Field(ge=1, le=999)
    postcode: str = Field(min_length=5, max_length=5)


class City(BaseModel):
    name: str
    population: int = Field(gt=1000, multiple_of=10)
    area_km2: float = Field(gt=0.5, lt=2.0)
    capital: bool
    colour: Colour
    kind: Literal["city", "town"]
    mayor: str | None
    founded: str = Field(json_schema_extra={"format": "date"})
    tags: list[str] = Field(min_length=2)
    centre: tuple[float, float]
    address: Address
    districts: list[Address]
    twin: City | None = None  # a recursive $ref: the filler must end it
    motto: str | int


class Weather(BaseModel):
    location: str
    unit: Literal["celsius", "fahrenheit"]


class Town(BaseModel):
    """What google-genai's ``response_schema`` accepts (no exclusive bounds, no tuples), and
    what anthropic's ``transform_schema`` keeps (bounds move into descriptions there)."""

    name: str
    colour: Colour
    mayor: str | None
    forecast: list[Weather]
    nights: int


def controls(value: str) -> dict[str, Any]:
    return {"extra_headers": {"x-emulator": value}}


class TestSchemaFill:
    @pytest.mark.parametrize("model", [City, Address, Weather])
    def test_pydantic_schemas_validate(self, model: type[BaseModel]) -> None:
        """The instance of a pydantic schema validates with jsonschema and with pydantic."""
        schema = model.model_json_schema()
        value = instance(schema)
        jsonschema.validate(value, schema)
        model.model_validate(value)

    def test_openai_strict_schema_validates(self) -> None:
        """OpenAI's strict rewrite (every property required, nulls as anyOf) is filled too."""
        schema = to_strict_json_schema(City)
        value = instance(schema)
        jsonschema.validate(value, schema)
        assert set(value) == set(City.model_fields)
        City.model_validate(value)

    def test_gemini_openapi_schema(self) -> None:
        """Gemini's upper-case OpenAPI types and ``nullable`` are understood."""
        schema = {
            "type": "OBJECT",
            "properties": {
                "n": {"type": "INTEGER", "minimum": 3},
                "xs": {"type": "ARRAY", "items": {"type": "STRING", "enum": ["a", "b"]}},
                "maybe": {"type": "NUMBER", "nullable": True},
            },
            "required": ["n", "xs", "maybe"],
        }
        assert instance(schema) == {"n": 3, "xs": ["a"], "maybe": 0}

    @pytest.mark.parametrize(
        "schema",
        [
            {"type": "array", "items": {"type": "integer"}, "minItems": 3, "uniqueItems": True},
            {"type": "string", "pattern": "^[0-9]+$"},
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            {"type": "integer", "minimum": 7, "multipleOf": 5},
            {"type": "object", "minProperties": 2, "additionalProperties": {"type": "boolean"}},
            {"allOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"const": 42}}},
            {"oneOf": [{"type": "null"}, {"type": "string", "format": "uuid"}]},
            {"type": ["null", "integer"], "maximum": -3},
        ],
    )
    def test_keywords(self, schema: dict[str, Any]) -> None:
        """Bounds, patterns, formats, tuples, unique items and combinators are honoured."""
        jsonschema.validate(instance(schema), schema)

    def test_impossible_schema_is_refused(self) -> None:
        """A schema nothing matches raises instead of answering something invalid."""
        with pytest.raises(SchemaError):
            instance({"type": "object", "properties": {"x": False}, "required": ["x"]})


class TestOpenAIChat:
    def test_parse_with_a_pydantic_model(self, client: openai.OpenAI) -> None:
        """``chat.completions.parse`` gets content that parses into the model."""
        completion = client.chat.completions.parse(
            model="gpt-5", messages=MESSAGES, response_format=City
        )
        parsed = completion.choices[0].message.parsed
        assert isinstance(parsed, City)
        assert parsed.population > 1000

    def test_stream_with_a_pydantic_model(self, client: openai.OpenAI) -> None:
        """The streamed JSON, in several deltas, parses into the model at the end."""
        with client.chat.completions.stream(
            model="gpt-5", messages=MESSAGES, response_format=Weather, **controls("tokens=5")
        ) as stream:
            deltas = [e for e in stream if e.type == "content.delta" and e.delta]
            final = stream.get_final_completion()
        assert len(deltas) == 5
        assert final.choices[0].message.parsed == Weather(location="flex", unit="celsius")

    def test_json_object(self, client: openai.OpenAI) -> None:
        """``json_object`` mode answers a JSON object."""
        completion = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, response_format={"type": "json_object"}
        )
        assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)

    @pytest.mark.parametrize(
        "choice", ["required", {"type": "function", "function": {"name": "Weather"}}]
    )
    def test_forced_tool(self, client: openai.OpenAI, choice: Any) -> None:
        """A required or named tool choice is answered with a call matching the tool."""
        tools: Any = [
            openai.pydantic_function_tool(Weather),
            openai.pydantic_function_tool(City),
        ]
        completion = client.chat.completions.parse(
            model="gpt-5", messages=MESSAGES, tools=tools, tool_choice=choice
        )
        message = completion.choices[0].message
        assert completion.choices[0].finish_reason == "tool_calls"
        assert message.tool_calls
        call = message.tool_calls[0]
        assert call.type == "function"
        assert call.function.name == "Weather"
        assert isinstance(call.function.parsed_arguments, Weather)

    def test_auto_tool_choice_answers_text(self, client: openai.OpenAI) -> None:
        """With ``tool_choice`` left to the model, the emulator answers text."""
        tools: Any = [openai.pydantic_function_tool(Weather)]
        completion = client.chat.completions.create(model="gpt-5", messages=MESSAGES, tools=tools)
        assert completion.choices[0].message.content
        assert completion.choices[0].message.tool_calls is None

    def test_tool_call_control_fills_declared_parameters(self, client: openai.OpenAI) -> None:
        """``tool_call=1`` calls the first tool with arguments matching its parameters."""
        tools: Any = [openai.pydantic_function_tool(City)]
        completion = client.chat.completions.create(
            model="gpt-5", messages=MESSAGES, tools=tools, stream=True, **controls("tool_call=1")
        )
        pieces = [
            call.function.arguments or ""
            for chunk in completion
            if chunk.choices
            for call in chunk.choices[0].delta.tool_calls or []
            if call.function
        ]
        City.model_validate_json("".join(pieces))


class TestOpenAIResponses:
    def test_parse_text_format(self, client: openai.OpenAI) -> None:
        """``responses.parse(text_format=...)`` gets output that parses into the model."""
        response = client.responses.parse(model="gpt-5", input="a city", text_format=City)
        assert isinstance(response.output_parsed, City)

    def test_stream_text_format(self, client: openai.OpenAI) -> None:
        """A streamed Responses answer in JSON parses into the model at the end."""
        with client.responses.stream(
            model="gpt-5", input="weather", text_format=Weather, **controls("tokens=4")
        ) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert kinds.count("response.output_text.delta") == 4
        assert final.output_parsed == Weather(location="flex", unit="celsius")

    def test_forced_function_tool(self, client: openai.OpenAI) -> None:
        """A required tool choice is answered with a ``function_call`` matching its schema."""
        tool: Any = openai.pydantic_responses_function_tool(Weather)
        response = client.responses.parse(
            model="gpt-5", input="weather", tools=[tool], tool_choice="required"
        )
        call = response.output[0]
        assert call.type == "function_call"
        assert call.name == "Weather"
        assert call.parsed_arguments == Weather(location="flex", unit="celsius")


class TestGemini:
    @pytest.fixture
    def gemini(self, emu: RunningEmulator) -> genai.Client:
        return genai.Client(
            api_key="gemini-test-key", http_options=types.HttpOptions(base_url=emu.base_url)
        )

    @pytest.mark.parametrize("field", ["response_schema", "response_json_schema"])
    def test_response_schema_parses(self, gemini: genai.Client, field: str) -> None:
        """``response_schema`` (OpenAPI) and ``response_json_schema`` answers parse."""
        schema: Any = Town if field == "response_schema" else City.model_json_schema()
        config = types.GenerateContentConfig(
            response_mime_type="application/json", **{field: schema}
        )
        response = gemini.models.generate_content(model=GEMINI, contents="x", config=config)
        if field == "response_schema":
            assert isinstance(response.parsed, Town)
        else:
            City.model_validate_json(response.text or "")

    def test_stream_joins_into_json(self, gemini: genai.Client) -> None:
        """A streamed JSON answer arrives in pieces that join into the schema's shape."""
        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=Weather,
            http_options=types.HttpOptions(headers={"x-emulator": "tokens=3"}),
        )
        chunks = list(
            gemini.models.generate_content_stream(model=GEMINI, contents="x", config=config)
        )
        assert len(chunks) == 3
        assert Weather.model_validate_json("".join(c.text or "" for c in chunks))

    def test_enum_mime_type(self, gemini: genai.Client) -> None:
        """``text/x.enum`` answers one of the enum's values as bare text."""
        config = types.GenerateContentConfig(
            response_mime_type="text/x.enum", response_schema=Colour
        )
        response = gemini.models.generate_content(model=GEMINI, contents="x", config=config)
        assert response.text == "red"

    def test_function_calling_mode_any(self, gemini: genai.Client) -> None:
        """``mode: ANY`` with allowed names calls that function with matching args."""
        weather = types.FunctionDeclaration(
            name="weather", parameters_json_schema=Weather.model_json_schema()
        )
        other = types.FunctionDeclaration(name="other")
        config = types.GenerateContentConfig(
            tools=[types.Tool(function_declarations=[other, weather])],
            tool_config=types.ToolConfig(
                function_calling_config=types.FunctionCallingConfig(
                    mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["weather"]
                )
            ),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        response = gemini.models.generate_content(model=GEMINI, contents="x", config=config)
        assert response.function_calls
        assert response.function_calls[0].name == "weather"
        Weather.model_validate(response.function_calls[0].args)


class TestAnthropic:
    @pytest.fixture
    def claude(self, emu: RunningEmulator) -> anthropic.Anthropic:
        return anthropic.Anthropic(api_key="claude-test-key", base_url=emu.base_url, max_retries=0)

    @pytest.mark.parametrize("stream", [False, True])
    def test_forced_tool(self, claude: anthropic.Anthropic, stream: bool) -> None:
        """A ``tool`` tool choice is answered with a tool_use block matching its input schema."""
        tools: Any = [
            {"name": "other", "input_schema": {"type": "object"}},
            {"name": "weather", "input_schema": Weather.model_json_schema()},
        ]
        choice: Any = {"type": "tool", "name": "weather"}
        message: anthropic.types.Message
        if stream:
            with claude.messages.stream(
                model=CLAUDE, max_tokens=64, messages=MESSAGES, tools=tools, tool_choice=choice
            ) as events:
                message = events.get_final_message()
        else:
            message = claude.messages.create(
                model=CLAUDE, max_tokens=64, messages=MESSAGES, tools=tools, tool_choice=choice
            )
        block = message.content[0]
        assert message.stop_reason == "tool_use"
        assert block.type == "tool_use"
        assert block.name == "weather"
        Weather.model_validate(block.input)

    def test_parse_output_format(self, claude: anthropic.Anthropic) -> None:
        """``messages.parse(output_format=...)`` gets text that parses into the model."""
        message = claude.messages.parse(
            model=CLAUDE, max_tokens=256, messages=MESSAGES, output_format=Town
        )
        assert isinstance(message.parsed_output, Town)
