"""A small multilingual preference set generated from hand-written templates.

Every language answers the same six science questions. ``chosen`` is a short, correct answer in the
prompt's language; ``rejected`` is one of four realistic failure modes:

- ``wrong_language``: a correct answer, but in another language (English, or for English prompts another
  language) — the language confusion that multilingual alignment must fix;
- ``refusal``: an unhelpful refusal;
- ``off_topic``: fluent text that ignores the question;
- ``repetition``: the first words of the answer, repeated (degenerate decoding).

A known share of pairs can be flipped (chosen and rejected swapped, ``"flipped": true``) in chosen
languages, which plants conflicting preference signal for benchmarks of the filter.

``python -m congrad.data.synthetic --out data/tiny_multilingual.jsonl`` writes the shipped file.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from congrad.utils.io import write_jsonl

TOPICS = ("photosynthesis", "rainbow", "water_cycle", "volcano", "gravity", "vaccine")
FAILURE_MODES = ("wrong_language", "refusal", "off_topic", "repetition")
CONVERSATIONAL_SHARE = 0.25
DEFAULT_PAIRS_PER_LANGUAGE = 40
SHIPPED_PATH = Path("data/tiny_multilingual.jsonl")


@dataclass(frozen=True)
class LanguageTemplates:
    """The text of one language.

    ``prompts`` contain a ``{topic}`` slot, filled with the topic's noun phrase, which is written in the
    grammatical form every prompt of that language needs (so no inflection happens in code).
    ``answers`` contain a ``{fact}`` slot, filled with the topic's one-sentence explanation.
    """

    system: str
    prompts: tuple[str, ...]
    answers: tuple[str, ...]
    refusals: tuple[str, ...]
    off_topic: tuple[str, ...]
    topics: dict[str, tuple[str, str]]  # topic key -> (noun phrase, fact)
    spaced: bool = True  # words separated by spaces (False for Chinese and Japanese)


TEMPLATES: dict[str, LanguageTemplates] = {
    "en": LanguageTemplates(
        system="You are a helpful assistant.",
        prompts=(
            "What is {topic}? Please answer in one or two sentences.",
            "Can you explain in simple words what {topic} is?",
            "I'm curious: what is {topic}? Keep it short.",
            "Explain briefly what {topic} is.",
        ),
        answers=("{fact}", "Sure! {fact}", "Good question! {fact} I hope this helps."),
        refusals=("Sorry, I can't help with that.", "I don't know. Look it up yourself."),
        off_topic=(
            "My favorite color is blue, and I like to eat pasta on Sundays.",
            "The train to the city leaves at eight o'clock every morning.",
        ),
        topics={
            "photosynthesis": (
                "photosynthesis",
                "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide "
                "to make sugar and release oxygen.",
            ),
            "rainbow": (
                "a rainbow",
                "A rainbow appears when sunlight is refracted and reflected inside raindrops, "
                "which split the light into its colors.",
            ),
            "water_cycle": (
                "the water cycle",
                "The water cycle is the continuous movement of water: it evaporates, forms clouds, "
                "falls as rain or snow and flows back to the sea.",
            ),
            "volcano": (
                "a volcano",
                "A volcano is an opening in the Earth's crust through which molten rock, ash and gases "
                "escape from deep inside the planet.",
            ),
            "gravity": (
                "gravity",
                "Gravity is the force that pulls objects with mass toward each other; it keeps us on "
                "the ground and the Moon in orbit around the Earth.",
            ),
            "vaccine": (
                "a vaccine",
                "A vaccine trains the immune system to recognize a pathogen, so the body can fight a "
                "real infection faster.",
            ),
        },
    ),
    "de": LanguageTemplates(
        system="Du bist ein hilfreicher Assistent.",
        prompts=(
            "Was ist {topic}? Bitte antworte in ein bis zwei Sätzen.",
            "Kannst du mir in einfachen Worten erklären, was {topic} ist?",
            "Ich bin neugierig: Was ist {topic}? Fasse dich kurz.",
            "Erkläre kurz, was {topic} ist.",
        ),
        answers=("{fact}", "Gern! {fact}", "Gute Frage! {fact} Ich hoffe, das hilft."),
        refusals=("Tut mir leid, dabei kann ich nicht helfen.", "Keine Ahnung. Schau doch selbst nach."),
        off_topic=(
            "Meine Lieblingsfarbe ist Blau, und sonntags esse ich gern Nudeln.",
            "Der Zug in die Stadt fährt jeden Morgen um acht Uhr ab.",
        ),
        topics={
            "photosynthesis": (
                "die Photosynthese",
                "Die Photosynthese ist der Prozess, bei dem Pflanzen mit Sonnenlicht, Wasser und "
                "Kohlendioxid Zucker herstellen und Sauerstoff abgeben.",
            ),
            "rainbow": (
                "ein Regenbogen",
                "Ein Regenbogen entsteht, wenn Sonnenlicht in Regentropfen gebrochen und reflektiert "
                "wird und sich dabei in seine Farben aufteilt.",
            ),
            "water_cycle": (
                "der Wasserkreislauf",
                "Der Wasserkreislauf ist die ständige Bewegung des Wassers: Es verdunstet, bildet "
                "Wolken, fällt als Regen oder Schnee und fließt zurück ins Meer.",
            ),
            "volcano": (
                "ein Vulkan",
                "Ein Vulkan ist eine Öffnung in der Erdkruste, durch die geschmolzenes Gestein, Asche "
                "und Gase aus dem Erdinneren austreten.",
            ),
            "gravity": (
                "die Schwerkraft",
                "Die Schwerkraft ist die Kraft, mit der sich Massen gegenseitig anziehen; sie hält uns "
                "auf dem Boden und den Mond auf seiner Bahn um die Erde.",
            ),
            "vaccine": (
                "ein Impfstoff",
                "Ein Impfstoff trainiert das Immunsystem darauf, einen Krankheitserreger zu erkennen, "
                "damit der Körper eine echte Infektion schneller abwehren kann.",
            ),
        },
    ),
    "fr": LanguageTemplates(
        system="Tu es un assistant serviable.",
        prompts=(
            "Dis-moi en une ou deux phrases ce qu'est {topic}.",
            "Peux-tu m'expliquer simplement ce qu'est {topic} ?",
            "Je suis curieux : peux-tu me dire ce qu'est {topic} ? Sois bref.",
            "Explique brièvement ce qu'est {topic}.",
        ),
        answers=("{fact}", "Bien sûr ! {fact}", "Bonne question ! {fact} J'espère que cela t'aide."),
        refusals=("Désolé, je ne peux pas t'aider avec ça.", "Je ne sais pas. Cherche toi-même."),
        off_topic=(
            "Ma couleur préférée est le bleu, et j'aime manger des pâtes le dimanche.",
            "Le train pour la ville part tous les matins à huit heures.",
        ),
        topics={
            "photosynthesis": (
                "la photosynthèse",
                "La photosynthèse est le processus par lequel les plantes utilisent la lumière du "
                "soleil, l'eau et le dioxyde de carbone pour produire du sucre et libérer de l'oxygène.",
            ),
            "rainbow": (
                "un arc-en-ciel",
                "Un arc-en-ciel apparaît quand la lumière du soleil est réfractée et réfléchie dans les "
                "gouttes de pluie, qui la décomposent en couleurs.",
            ),
            "water_cycle": (
                "le cycle de l'eau",
                "Le cycle de l'eau est le mouvement continu de l'eau : elle s'évapore, forme des "
                "nuages, retombe en pluie ou en neige et retourne à la mer.",
            ),
            "volcano": (
                "un volcan",
                "Un volcan est une ouverture dans la croûte terrestre par laquelle de la roche fondue, "
                "des cendres et des gaz sortent des profondeurs de la Terre.",
            ),
            "gravity": (
                "la gravité",
                "La gravité est la force qui attire les objets ayant une masse les uns vers les "
                "autres ; elle nous retient au sol et maintient la Lune en orbite autour de la Terre.",
            ),
            "vaccine": (
                "un vaccin",
                "Un vaccin apprend au système immunitaire à reconnaître un agent pathogène, afin que "
                "le corps combatte plus vite une véritable infection.",
            ),
        },
    ),
    "es": LanguageTemplates(
        system="Eres un asistente útil.",
        prompts=(
            "¿Qué es {topic}? Responde en una o dos frases.",
            "¿Puedes explicarme con palabras sencillas qué es {topic}?",
            "Tengo curiosidad: ¿qué es {topic}? Sé breve.",
            "Explica brevemente qué es {topic}.",
        ),
        answers=("{fact}", "¡Claro! {fact}", "¡Buena pregunta! {fact} Espero que te sirva."),
        refusals=("Lo siento, no puedo ayudarte con eso.", "No lo sé. Búscalo tú mismo."),
        off_topic=(
            "Mi color favorito es el azul y los domingos me gusta comer pasta.",
            "El tren a la ciudad sale todas las mañanas a las ocho.",
        ),
        topics={
            "photosynthesis": (
                "la fotosíntesis",
                "La fotosíntesis es el proceso por el que las plantas usan la luz del sol, el agua y "
                "el dióxido de carbono para producir azúcar y liberar oxígeno.",
            ),
            "rainbow": (
                "un arcoíris",
                "Un arcoíris aparece cuando la luz del sol se refracta y se refleja dentro de las "
                "gotas de lluvia, que la separan en sus colores.",
            ),
            "water_cycle": (
                "el ciclo del agua",
                "El ciclo del agua es el movimiento continuo del agua: se evapora, forma nubes, cae "
                "como lluvia o nieve y vuelve al mar.",
            ),
            "volcano": (
                "un volcán",
                "Un volcán es una abertura en la corteza terrestre por la que salen roca fundida, "
                "ceniza y gases del interior del planeta.",
            ),
            "gravity": (
                "la gravedad",
                "La gravedad es la fuerza que atrae entre sí a los objetos con masa; nos mantiene en "
                "el suelo y a la Luna en órbita alrededor de la Tierra.",
            ),
            "vaccine": (
                "una vacuna",
                "Una vacuna entrena al sistema inmunitario para reconocer un patógeno, de modo que el "
                "cuerpo combata una infección real con más rapidez.",
            ),
        },
    ),
    "it": LanguageTemplates(
        system="Sei un assistente disponibile.",
        prompts=(
            "Che cos'è {topic}? Rispondi in una o due frasi.",
            "Puoi spiegarmi con parole semplici che cos'è {topic}?",
            "Sono curioso: che cos'è {topic}? Sii breve.",
            "Spiega brevemente che cos'è {topic}.",
        ),
        answers=("{fact}", "Certo! {fact}", "Bella domanda! {fact} Spero che ti sia utile."),
        refusals=("Mi dispiace, non posso aiutarti con questo.", "Non lo so. Cercalo da solo."),
        off_topic=(
            "Il mio colore preferito è il blu e la domenica mi piace mangiare la pasta.",
            "Il treno per la città parte ogni mattina alle otto.",
        ),
        topics={
            "photosynthesis": (
                "la fotosintesi",
                "La fotosintesi è il processo con cui le piante usano la luce del sole, l'acqua e "
                "l'anidride carbonica per produrre zuccheri e liberare ossigeno.",
            ),
            "rainbow": (
                "un arcobaleno",
                "Un arcobaleno si forma quando la luce del sole viene rifratta e riflessa nelle gocce "
                "di pioggia, che la scompongono nei suoi colori.",
            ),
            "water_cycle": (
                "il ciclo dell'acqua",
                "Il ciclo dell'acqua è il movimento continuo dell'acqua: evapora, forma le nuvole, "
                "cade come pioggia o neve e ritorna al mare.",
            ),
            "volcano": (
                "un vulcano",
                "Un vulcano è un'apertura nella crosta terrestre da cui escono roccia fusa, cenere e "
                "gas dall'interno del pianeta.",
            ),
            "gravity": (
                "la gravità",
                "La gravità è la forza che attira tra loro gli oggetti dotati di massa; ci tiene con i "
                "piedi per terra e mantiene la Luna in orbita intorno alla Terra.",
            ),
            "vaccine": (
                "un vaccino",
                "Un vaccino insegna al sistema immunitario a riconoscere un agente patogeno, così il "
                "corpo può combattere più in fretta un'infezione vera.",
            ),
        },
    ),
    "pt": LanguageTemplates(
        system="Você é um assistente prestativo.",
        prompts=(
            "O que é {topic}? Responda em uma ou duas frases.",
            "Você pode me explicar com palavras simples o que é {topic}?",
            "Estou curioso: o que é {topic}? Seja breve.",
            "Explique brevemente o que é {topic}.",
        ),
        answers=("{fact}", "Claro! {fact}", "Boa pergunta! {fact} Espero ter ajudado."),
        refusals=("Desculpe, não posso ajudar com isso.", "Não sei. Pesquise você mesmo."),
        off_topic=(
            "Minha cor favorita é azul, e aos domingos eu gosto de comer macarrão.",
            "O trem para a cidade sai todas as manhãs às oito horas.",
        ),
        topics={
            "photosynthesis": (
                "a fotossíntese",
                "A fotossíntese é o processo pelo qual as plantas usam a luz do sol, a água e o gás "
                "carbônico para produzir açúcar e liberar oxigênio.",
            ),
            "rainbow": (
                "um arco-íris",
                "Um arco-íris aparece quando a luz do sol é refratada e refletida dentro das gotas de "
                "chuva, que a separam em suas cores.",
            ),
            "water_cycle": (
                "o ciclo da água",
                "O ciclo da água é o movimento contínuo da água: ela evapora, forma nuvens, cai como "
                "chuva ou neve e volta para o mar.",
            ),
            "volcano": (
                "um vulcão",
                "Um vulcão é uma abertura na crosta terrestre por onde rocha derretida, cinzas e gases "
                "saem do interior do planeta.",
            ),
            "gravity": (
                "a gravidade",
                "A gravidade é a força que atrai os objetos com massa uns para os outros; ela nos "
                "mantém no chão e a Lua em órbita ao redor da Terra.",
            ),
            "vaccine": (
                "uma vacina",
                "Uma vacina treina o sistema imunológico para reconhecer um patógeno, para que o corpo "
                "combata uma infecção real com mais rapidez.",
            ),
        },
    ),
    "ru": LanguageTemplates(
        system="Ты — полезный ассистент.",
        prompts=(
            "Что такое {topic}? Ответь в одном-двух предложениях.",
            "Можешь простыми словами объяснить, что такое {topic}?",
            "Мне интересно: что такое {topic}? Ответь коротко.",
            "Кратко объясни, что такое {topic}.",
        ),
        answers=("{fact}", "Конечно! {fact}", "Хороший вопрос! {fact} Надеюсь, это поможет."),
        refusals=("Извините, я не могу с этим помочь.", "Не знаю. Поищи сам."),
        off_topic=(
            "Мой любимый цвет — синий, а по воскресеньям я люблю есть макароны.",
            "Поезд в город отправляется каждое утро в восемь часов.",
        ),
        topics={
            "photosynthesis": (
                "фотосинтез",
                "Фотосинтез — это процесс, при котором растения с помощью солнечного света, воды и "
                "углекислого газа образуют сахар и выделяют кислород.",
            ),
            "rainbow": (
                "радуга",
                "Радуга появляется, когда солнечный свет преломляется и отражается в каплях дождя и "
                "раскладывается на цвета.",
            ),
            "water_cycle": (
                "круговорот воды",
                "Круговорот воды — это постоянное движение воды: она испаряется, образует облака, "
                "выпадает дождём или снегом и возвращается в море.",
            ),
            "volcano": (
                "вулкан",
                "Вулкан — это отверстие в земной коре, через которое из недр планеты выходят "
                "расплавленная порода, пепел и газы.",
            ),
            "gravity": (
                "гравитация",
                "Гравитация — это сила, с которой тела, обладающие массой, притягиваются друг к другу; "
                "она удерживает нас на земле, а Луну — на орбите вокруг Земли.",
            ),
            "vaccine": (
                "вакцина",
                "Вакцина учит иммунную систему распознавать возбудителя болезни, чтобы организм "
                "быстрее справился с настоящей инфекцией.",
            ),
        },
    ),
    "zh": LanguageTemplates(
        system="你是一个乐于助人的助手。",
        prompts=(
            "什么是{topic}？请用一两句话回答。",
            "你能用简单的话解释一下什么是{topic}吗？",
            "我很好奇：{topic}是什么？请简短回答。",
            "请简要说明什么是{topic}。",
        ),
        answers=("{fact}", "当然可以！{fact}", "好问题！{fact}希望这对你有帮助。"),
        refusals=("抱歉，这个问题我帮不了你。", "我不知道，你自己去查吧。"),
        off_topic=("我最喜欢的颜色是蓝色，星期天我喜欢吃意大利面。", "去城里的火车每天早上八点出发。"),
        topics={
            "photosynthesis": ("光合作用", "光合作用是植物利用阳光、水和二氧化碳制造糖分并释放氧气的过程。"),
            "rainbow": ("彩虹", "当阳光在雨滴中发生折射和反射时，光会分解成不同的颜色，这样就形成了彩虹。"),
            "water_cycle": (
                "水循环",
                "水循环是水不断运动的过程：水蒸发后形成云，再以雨或雪的形式落下，最后流回大海。",
            ),
            "volcano": ("火山", "火山是地壳上的开口，地球内部的熔岩、火山灰和气体会从这里喷出。"),
            "gravity": (
                "重力",
                "重力是有质量的物体之间相互吸引的力；它让我们站在地面上，也让月球绕着地球运行。",
            ),
            "vaccine": ("疫苗", "疫苗能训练免疫系统识别病原体，这样身体在真正感染时就能更快地抵抗疾病。"),
        },
        spaced=False,
    ),
    "ja": LanguageTemplates(
        system="あなたは親切なアシスタントです。",
        prompts=(
            "{topic}とは何ですか？一、二文で答えてください。",
            "{topic}について、簡単な言葉で説明してもらえますか？",
            "{topic}が何なのか気になります。短く教えてください。",
            "{topic}とは何か、簡潔に説明してください。",
        ),
        answers=("{fact}", "もちろんです。{fact}", "良い質問ですね。{fact}お役に立てればうれしいです。"),
        refusals=(
            "申し訳ありませんが、その質問にはお答えできません。",
            "わかりません。自分で調べてください。",
        ),
        off_topic=(
            "私の好きな色は青で、日曜日にはよくパスタを食べます。",
            "町へ行く電車は毎朝八時に出発します。",
        ),
        topics={
            "photosynthesis": (
                "光合成",
                "光合成とは、植物が日光と水と二酸化炭素を使って糖を作り、酸素を放出するしくみです。",
            ),
            "rainbow": (
                "虹",
                "虹は、太陽の光が雨粒の中で屈折・反射し、さまざまな色に分かれることで現れます。",
            ),
            "water_cycle": (
                "水の循環",
                "水の循環とは、水が蒸発して雲になり、雨や雪として降り、やがて海へ戻るという絶え間ない動きのことです。",
            ),
            "volcano": (
                "火山",
                "火山とは、地球の内部から溶けた岩石や火山灰、ガスが噴き出す地殻の開口部のことです。",
            ),
            "gravity": (
                "重力",
                "重力とは、質量をもつ物体どうしが引き合う力のことで、私たちを地面にとどめ、月を地球の周りの軌道に保っています。",
            ),
            "vaccine": (
                "ワクチン",
                "ワクチンは、免疫の仕組みに病原体を覚えさせ、本当に感染したときに体がすばやく戦えるようにするものです。",
            ),
        },
        spaced=False,
    ),
    "ar": LanguageTemplates(
        system="أنت مساعد مفيد.",
        prompts=(
            "ما المقصود ب{topic}؟ أجب في جملة أو جملتين.",
            "هل يمكنك أن تشرح لي {topic} بكلمات بسيطة؟",
            "أريد أن أعرف شيئًا عن {topic}. أجب باختصار.",
            "اشرح {topic} باختصار.",
        ),
        answers=("{fact}", "بالتأكيد! {fact}", "سؤال جيد! {fact} أتمنى أن يكون هذا مفيدًا."),
        refusals=("عذرًا، لا أستطيع المساعدة في ذلك.", "لا أعرف. ابحث عن ذلك بنفسك."),
        off_topic=(
            "لوني المفضل هو الأزرق، وأحب أن آكل المعكرونة يوم الأحد.",
            "يغادر القطار إلى المدينة كل صباح في الساعة الثامنة.",
        ),
        topics={
            "photosynthesis": (
                "التمثيل الضوئي",
                "التمثيل الضوئي هو العملية التي تستخدم فيها النباتات ضوء الشمس والماء وثاني أكسيد "
                "الكربون لصنع السكر وإطلاق الأكسجين.",
            ),
            "rainbow": (
                "قوس قزح",
                "يظهر قوس قزح عندما ينكسر ضوء الشمس وينعكس داخل قطرات المطر، فيتحلل إلى ألوانه المختلفة.",
            ),
            "water_cycle": (
                "دورة الماء",
                "دورة الماء هي الحركة المستمرة للماء: يتبخر، ويكوّن السحب، ثم يسقط مطرًا أو ثلجًا، "
                "ويعود إلى البحر.",
            ),
            "volcano": (
                "البركان",
                "البركان فتحة في القشرة الأرضية تخرج منها الصخور المنصهرة والرماد والغازات من باطن الأرض.",
            ),
            "gravity": (
                "الجاذبية",
                "الجاذبية هي القوة التي تجذب الأجسام ذات الكتلة بعضها إلى بعض؛ فهي تبقينا على الأرض "
                "وتُبقي القمر في مداره حول الأرض.",
            ),
            "vaccine": (
                "اللقاح",
                "اللقاح يدرّب جهاز المناعة على التعرف على مسبب المرض، فيتمكن الجسم من مقاومة العدوى "
                "الحقيقية بسرعة أكبر.",
            ),
        },
    ),
    "hi": LanguageTemplates(
        system="आप एक मददगार सहायक हैं।",
        prompts=(
            "{topic} क्या है? एक-दो वाक्यों में जवाब दीजिए।",
            "क्या आप आसान शब्दों में समझा सकते हैं कि {topic} क्या है?",
            "मैं जानना चाहता हूँ कि {topic} क्या है। संक्षेप में बताइए।",
            "{topic} के बारे में संक्षेप में बताइए।",
        ),
        answers=("{fact}", "ज़रूर! {fact}", "अच्छा सवाल है! {fact} उम्मीद है कि इससे मदद मिलेगी।"),
        refusals=("माफ़ कीजिए, मैं इसमें आपकी मदद नहीं कर सकता।", "मुझे नहीं पता। आप खुद ही खोज लीजिए।"),
        off_topic=(
            "मेरा पसंदीदा रंग नीला है, और रविवार को मुझे पास्ता खाना अच्छा लगता है।",
            "शहर जाने वाली ट्रेन हर सुबह आठ बजे निकलती है।",
        ),
        topics={
            "photosynthesis": (
                "प्रकाश संश्लेषण",
                "प्रकाश संश्लेषण वह प्रक्रिया है जिसमें पौधे सूरज की रोशनी, पानी और कार्बन डाइऑक्साइड "
                "से शर्करा बनाते हैं और ऑक्सीजन छोड़ते हैं।",
            ),
            "rainbow": (
                "इंद्रधनुष",
                "इंद्रधनुष तब बनता है जब सूरज की रोशनी बारिश की बूंदों में मुड़कर और परावर्तित होकर "
                "अलग-अलग रंगों में बंट जाती है।",
            ),
            "water_cycle": (
                "जल चक्र",
                "जल चक्र पानी की लगातार चलने वाली यात्रा है: पानी भाप बनकर उड़ता है, बादल बनाता है, "
                "बारिश या बर्फ के रूप में गिरता है और फिर समुद्र में लौट आता है।",
            ),
            "volcano": (
                "ज्वालामुखी",
                "ज्वालामुखी पृथ्वी की सतह पर एक ऐसा छेद है जिससे धरती के भीतर से पिघली हुई चट्टान, "
                "राख और गैसें बाहर निकलती हैं।",
            ),
            "gravity": (
                "गुरुत्वाकर्षण",
                "गुरुत्वाकर्षण वह बल है जिससे द्रव्यमान वाली वस्तुएँ एक-दूसरे को अपनी ओर खींचती हैं; "
                "यही बल हमें ज़मीन पर और चंद्रमा को पृथ्वी की कक्षा में बनाए रखता है।",
            ),
            "vaccine": (
                "वैक्सीन",
                "वैक्सीन प्रतिरक्षा तंत्र को किसी रोगाणु को पहचानना सिखाती है, ताकि असली संक्रमण होने "
                "पर शरीर उससे जल्दी लड़ सके।",
            ),
        },
    ),
    "ko": LanguageTemplates(
        system="당신은 친절한 도우미입니다.",
        prompts=(
            "{topic}에 대해 한두 문장으로 설명해 주세요.",
            "{topic}에 대해 쉬운 말로 설명해 줄 수 있나요?",
            "{topic}에 대해 궁금해요. 짧게 알려 주세요.",
            "{topic}에 관해 간단히 알려 주세요.",
        ),
        answers=("{fact}", "물론이죠! {fact}", "좋은 질문이에요! {fact} 도움이 되었으면 좋겠어요."),
        refusals=("죄송하지만 그 질문에는 도와드릴 수 없어요.", "모르겠어요. 직접 찾아보세요."),
        off_topic=(
            "제가 가장 좋아하는 색은 파란색이고, 일요일에는 파스타를 즐겨 먹어요.",
            "시내로 가는 기차는 매일 아침 여덟 시에 출발합니다.",
        ),
        topics={
            "photosynthesis": (
                "광합성",
                "광합성은 식물이 햇빛과 물, 이산화탄소를 이용해 당을 만들고 산소를 내보내는 과정입니다.",
            ),
            "rainbow": (
                "무지개",
                "무지개는 햇빛이 빗방울 속에서 굴절되고 반사되면서 여러 가지 색으로 나뉠 때 나타납니다.",
            ),
            "water_cycle": (
                "물의 순환",
                "물의 순환은 물이 증발해 구름이 되고, 비나 눈으로 내린 뒤 "
                "다시 바다로 돌아가는 끊임없는 움직임입니다.",
            ),
            "volcano": (
                "화산",
                "화산은 지구 내부의 녹은 암석과 화산재, 가스가 밖으로 뿜어져 나오는 지각의 틈입니다.",
            ),
            "gravity": (
                "중력",
                "중력은 질량을 가진 물체들이 서로 끌어당기는 힘으로, 우리를 땅 위에 붙잡아 두고 "
                "달이 지구 주위를 돌게 합니다.",
            ),
            "vaccine": (
                "백신",
                "백신은 면역 체계가 병원체를 알아보도록 훈련시켜, 실제로 감염되었을 때 "
                "몸이 더 빨리 싸울 수 있게 해 줍니다.",
            ),
        },
    ),
}

DEFAULT_LANGUAGES: tuple[str, ...] = tuple(TEMPLATES)


def template_texts() -> list[str]:
    """Every sentence the generator can emit, in a fixed order: the corpus of the tiny tokenizer."""
    texts = []
    for t in TEMPLATES.values():
        texts.append(t.system)
        for phrase, fact in t.topics.values():
            texts.extend(p.format(topic=phrase) for p in t.prompts)
            texts.extend(a.format(fact=fact) for a in t.answers)
        texts.extend(t.refusals)
        texts.extend(t.off_topic)
    return texts


def make_preference_rows(
    languages: Iterable[str] = DEFAULT_LANGUAGES,
    pairs_per_language: int = DEFAULT_PAIRS_PER_LANGUAGE,
    seed: int = 0,
    flip_fraction: float = 0.0,
    flip_languages: Iterable[str] | None = None,
) -> list[dict]:
    """Preference rows in the format of DESIGN §3 (``id``, ``prompt``, ``chosen``, ``rejected``,
    ``language``) plus ``flipped``, grouped by language in the order given.

    Each language draws from its own random stream (seeded by ``seed`` and the language code), so a
    language's rows do not depend on which other languages are requested. About a quarter of the rows
    use TRL's conversational form (a system and a user message as prompt, one assistant message per
    completion). In each language of ``flip_languages`` (``None``: every language) exactly
    ``round(flip_fraction * pairs_per_language)`` rows, chosen at random, have chosen and rejected swapped.
    """
    languages = list(languages)
    unknown = sorted(set(languages) - set(TEMPLATES))
    if unknown:
        raise ValueError(f"no templates for languages {unknown}; available: {sorted(TEMPLATES)}")
    if not 0.0 <= flip_fraction <= 1.0:
        raise ValueError(f"flip_fraction must be in [0, 1], got {flip_fraction}")
    flipped_in = set(languages if flip_languages is None else flip_languages)
    rows = []
    for language in languages:
        language_rows = _language_rows(language, pairs_per_language, seed)
        if language in flipped_in:
            _flip(
                language_rows,
                round(flip_fraction * pairs_per_language),
                random.Random(f"{seed}:{language}:flip"),
            )
        rows.extend(language_rows)
    return rows


def _language_rows(language: str, n: int, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}:{language}")
    t = TEMPLATES[language]
    combos = [(topic, prompt) for topic in TOPICS for prompt in t.prompts]
    order: list[tuple[str, str]] = []
    while len(order) < n:  # every (topic, prompt) once before any repeats
        order.extend(rng.sample(combos, len(combos)))
    rows = []
    for k, (topic, prompt_template) in enumerate(order[:n]):
        phrase, fact = t.topics[topic]
        prompt = prompt_template.format(topic=phrase)
        chosen = rng.choice(t.answers).format(fact=fact)
        rejected = _rejected(language, topic, rng.choice(FAILURE_MODES), rng)
        if rng.random() < CONVERSATIONAL_SHARE:
            prompt = [{"role": "system", "content": t.system}, {"role": "user", "content": prompt}]
            chosen = [{"role": "assistant", "content": chosen}]
            rejected = [{"role": "assistant", "content": rejected}]
        rows.append(
            {
                "id": f"{language}-{k:04d}",
                "language": language,
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "flipped": False,
            }
        )
    return rows


def _rejected(language: str, topic: str, mode: str, rng: random.Random) -> str:
    t = TEMPLATES[language]
    if mode == "wrong_language":
        others = [code for code in TEMPLATES if code not in (language, "en")]
        other = "en" if language != "en" and rng.random() < 0.5 else rng.choice(others)
        return rng.choice(TEMPLATES[other].answers).format(fact=TEMPLATES[other].topics[topic][1])
    if mode == "refusal":
        return rng.choice(t.refusals)
    if mode == "off_topic":
        return rng.choice(t.off_topic)
    fact = t.topics[topic][1]
    if t.spaced:
        fragment = " ".join(fact.split()[:4]).rstrip(",.;:،—")
        return " ".join([fragment] * 6)
    return fact[:6] * 6


def _flip(rows: list[dict], count: int, rng: random.Random) -> None:
    for row in rng.sample(rows, count):
        row["chosen"], row["rejected"] = row["rejected"], row["chosen"]
        row["flipped"] = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=SHIPPED_PATH)
    parser.add_argument("--languages", nargs="+", default=list(DEFAULT_LANGUAGES))
    parser.add_argument("--pairs-per-language", type=int, default=DEFAULT_PAIRS_PER_LANGUAGE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip-fraction", type=float, default=0.0)
    parser.add_argument("--flip-languages", nargs="*", default=None, help="default: every language")
    args = parser.parse_args(argv)
    rows = make_preference_rows(
        args.languages, args.pairs_per_language, args.seed, args.flip_fraction, args.flip_languages
    )
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} pairs in {len(args.languages)} languages to {args.out}")


if __name__ == "__main__":
    main()
